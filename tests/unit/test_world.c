/*
 * test_world.c: the workers' mailboxes and world_stop, with real threads and event loops: mail
 * arrives once each, in the order one sender posted it; while one worker has the world stopped
 * no other runs a callback; two workers stopping the world at once take turns instead of
 * deadlocking; a worker whose loop ended is never waited for. Meant to run under
 * ThreadSanitizer too (the counters below are plain ints: a missing happens-before is a report).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/event.h>

#include "tap.h"
#include "worker.h"
#include "world.h"

#define N_WORKERS 4
#define MAILS_PER_SENDER 2000
#define STOPS_PER_THREAD 200

/* What each worker's loop counts: touched only by its own thread, or by a stopper. */
struct counts {
    int received[N_WORKERS];          /* mails from each sender */
    int out_of_order;                 /* a sender's mail before an earlier one of its own */
    int last_seq[N_WORKERS];
    int callbacks;                    /* tick callbacks run */
};

static struct world world;
static struct worker workers[N_WORKERS];
static struct counts counts[N_WORKERS];
static atomic_int stopped_by;         /* -1, or the worker that has the world stopped */
static atomic_int ran_while_stopped;  /* a callback ran on another worker meanwhile */
static atomic_int finished_senders;
static atomic_int stops_done;       /* world_stop ... world_resume rounds completed */

struct numbered_mail {
    struct mail mail;
    int sender;
    int seq;
};

static void numbered_deliver(struct worker *w, struct mail *mail)
{
    struct numbered_mail *m = (struct numbered_mail *)mail;
    struct counts *c = &counts[w->index];
    c->received[m->sender]++;
    if (m->seq != c->last_seq[m->sender] + 1)
        c->out_of_order++;
    c->last_seq[m->sender] = m->seq;
    free(m);
}

/* A timer on every loop: proof that loops turn, and a check that none turns while stopped. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)fd;
    (void)what;
    int stopper = atomic_load(&stopped_by);
    if (stopper >= 0 && stopper != (int)w->index)
        atomic_fetch_add(&ran_while_stopped, 1);
    counts[w->index].callbacks++;
}

static void exit_deliver(struct worker *w, struct mail *mail)
{
    free(mail);
    event_base_loopbreak(w->base);
}

static void *loop_thread(void *arg)
{
    struct worker *w = arg;
    struct event *tick = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
    struct timeval tv = { 0, 1000 };
    event_add(tick, &tv);
    event_base_dispatch(w->base);
    event_free(tick);
    world_retire_worker(w);
    return NULL;
}

/* Sends numbered mail to every other worker, stopping the world now and then. */
static void *sender_thread(void *arg)
{
    struct worker *self = arg;
    for (int seq = 1; seq <= MAILS_PER_SENDER; seq++) {
        for (int to = 0; to < N_WORKERS; to++) {
            struct numbered_mail *m = calloc(1, sizeof(*m));
            m->mail.deliver = numbered_deliver;
            m->sender = (int)self->index;
            m->seq = seq;
            worker_post(&workers[to], &m->mail);
        }
    }
    atomic_fetch_add(&finished_senders, 1);
    return NULL;
}

/* Stops the world from this worker's thread (as the console would), checks, resumes. */
struct stop_request {
    struct mail mail;
    int remaining;
};

static void stop_deliver(struct worker *w, struct mail *mail)
{
    struct stop_request *req = (struct stop_request *)mail;
    world_stop(w);
    world_stop(w); /* nests */
    atomic_store(&stopped_by, (int)w->index);
    /* Everyone else is parked: their counts may be read and written from here. */
    for (int i = 0; i < N_WORKERS; i++) {
        if (i != (int)w->index) {
            counts[i].callbacks++;
            counts[i].callbacks--;
        }
    }
    usleep(50);
    atomic_store(&stopped_by, -1);
    world_resume(w);
    world_resume(w);
    atomic_fetch_add(&stops_done, 1);
    if (--req->remaining > 0) {
        worker_post(w, &req->mail); /* again, after others had a turn */
        return;
    }
    free(req);
}

static void post_stops(int worker_index, int times)
{
    struct stop_request *req = calloc(1, sizeof(*req));
    req->mail.deliver = stop_deliver;
    req->remaining = times;
    worker_post(&workers[worker_index], &req->mail);
}

int main(void)
{
    pthread_t loops[N_WORKERS], senders[N_WORKERS];

    atomic_store(&stopped_by, -1);
    ok(world_init(&world, N_WORKERS) == 0, "world_init");
    for (int i = 0; i < N_WORKERS; i++) {
        memset(&workers[i], 0, sizeof(workers[i]));
        workers[i].world = &world;
        workers[i].index = (unsigned)i;
        workers[i].base = event_base_new();
        world.workers[i] = &workers[i];
        ok(mailbox_init(&workers[i]) == 0, "mailbox %d set up", i);
    }
    for (int i = 0; i < N_WORKERS; i++)
        pthread_create(&loops[i], NULL, loop_thread, &workers[i]);
    /* Two workers stop the world over and over while all four send each other mail. */
    post_stops(0, STOPS_PER_THREAD);
    post_stops(1, STOPS_PER_THREAD);
    for (int i = 0; i < N_WORKERS; i++)
        pthread_create(&senders[i], NULL, sender_thread, &workers[i]);
    for (int i = 0; i < N_WORKERS; i++)
        pthread_join(senders[i], NULL);

    /* Worker 3's loop ends first: a later world_stop must not wait for it. */
    struct mail *bye = calloc(1, sizeof(*bye));
    bye->deliver = exit_deliver;
    worker_post(&workers[3], bye);
    pthread_join(loops[3], NULL);
    post_stops(2, 5);
    while (atomic_load(&stops_done) < 2 * STOPS_PER_THREAD + 5)
        usleep(1000); /* a deadlock shows as the test's timeout */
    for (int i = 0; i < 3; i++) {
        struct mail *m = calloc(1, sizeof(*m));
        m->deliver = exit_deliver;
        worker_post(&workers[i], m);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(loops[i], NULL);
    /* What was still queued runs as worker_destroy would run it. */
    for (int i = 0; i < N_WORKERS; i++)
        worker_deliver_mail(&workers[i]);

    int lost = 0, disorder = 0;
    for (int to = 0; to < N_WORKERS; to++) {
        for (int from = 0; from < N_WORKERS; from++)
            lost += MAILS_PER_SENDER - counts[to].received[from];
        disorder += counts[to].out_of_order;
    }
    is_int(lost, 0, "every mail arrived exactly once");
    is_int(disorder, 0, "each sender's mail arrived in the order it was posted");
    is_int(atomic_load(&stops_done), 2 * STOPS_PER_THREAD + 5,
           "every world_stop returned, also the ones after a worker's loop had ended");
    is_int(atomic_load(&ran_while_stopped), 0, "no callback ran on another worker while the world was stopped");
    is_int(atomic_load(&finished_senders), N_WORKERS, "every sender finished (no deadlock)");

    for (int i = 0; i < N_WORKERS; i++) {
        mailbox_free(&workers[i]);
        event_base_free(workers[i].base);
    }
    world_free(&world);
    return tap_done();
}
