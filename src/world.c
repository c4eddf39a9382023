/*
 * world.c: the process's workers: how many, their mailboxes, and stopping all but one of them
 * (world_stop) so that the admin console, the metrics page and a reload see and change the whole
 * process as one consistent state. Starting and joining the threads is in worker.c.
 */
#include "world.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <event2/event.h>

#include "log.h"
#include "worker.h"

#define WORLD_AUTO_IS_ONE 0

size_t world_worker_count(const struct config *cfg)
{
    if (cfg->workers > 0)
        return (size_t)cfg->workers;
    if (WORLD_AUTO_IS_ONE)
        return 1; /* until pools are shared across workers: pool_size would hold per worker */
    cpu_set_t set;
    long n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0)
        n = 1;
    return n > CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS : (size_t)n;
}

/* ---- stopping the world ---- */

static bool world_is_stopped_by_other(const struct world *world, const struct worker *self)
{
    return world->stopper != NULL && world->stopper != self;
}

/* Under stop_lock: wait, counted as parked, until nobody else has the world stopped. */
static void world_park_locked(struct world *world, struct worker *self)
{
    world->n_parked++;
    pthread_cond_broadcast(&world->stop_cond);
    while (world_is_stopped_by_other(world, self))
        pthread_cond_wait(&world->stop_cond, &world->stop_lock);
    world->n_parked--;
}

/* A worker between callbacks: if another one stopped the world, wait here until it resumes. */
static void world_park_if_stopped(struct worker *self)
{
    struct world *world = self->world;
    pthread_mutex_lock(&world->stop_lock);
    if (world_is_stopped_by_other(world, self))
        world_park_locked(world, self);
    pthread_mutex_unlock(&world->stop_lock);
}

static void mailbox_wake(struct mailbox *box)
{
    uint64_t one = 1;
    pthread_mutex_lock(&box->lock);
    bool write_needed = !box->wake_pending;
    box->wake_pending = true;
    pthread_mutex_unlock(&box->lock);
    if (write_needed && write(box->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warning("could not wake a worker: %s", strerror(errno));
}

void world_stop(struct worker *self)
{
    struct world *world = self->world;
    pthread_mutex_lock(&world->stop_lock);
    while (world_is_stopped_by_other(world, self))
        world_park_locked(world, self); /* someone else first: let it finish */
    world->stopper = self;
    if (world->stop_depth++ > 0) {
        pthread_mutex_unlock(&world->stop_lock);
        return;
    }
    pthread_mutex_unlock(&world->stop_lock);

    struct worker *other;
    WORLD_FOR_EACH_WORKER(world, i, other)
        if (other != self)
            mailbox_wake(&other->mailbox);

    pthread_mutex_lock(&world->stop_lock);
    while (world->n_parked + 1 < world->n_workers)
        pthread_cond_wait(&world->stop_cond, &world->stop_lock);
    pthread_mutex_unlock(&world->stop_lock);
}

void world_resume(struct worker *self)
{
    struct world *world = self->world;
    pthread_mutex_lock(&world->stop_lock);
    if (world->stopper == self && --world->stop_depth == 0) {
        world->stopper = NULL;
        pthread_cond_broadcast(&world->stop_cond);
    }
    pthread_mutex_unlock(&world->stop_lock);
}

/* A worker whose loop has ended counts as parked for good: nobody waits for it to stop. */
void world_retire_worker(struct worker *self)
{
    struct world *world = self->world;
    pthread_mutex_lock(&world->stop_lock);
    world->n_parked++;
    pthread_cond_broadcast(&world->stop_cond);
    pthread_mutex_unlock(&world->stop_lock);
}

/* ---- mailboxes ---- */

void *mail_new(size_t size, mail_fn deliver)
{
    struct mail *mail = calloc(1, size);
    if (mail)
        mail->deliver = deliver;
    return mail;
}

void worker_post(struct worker *to, struct mail *mail)
{
    struct mailbox *box = &to->mailbox;
    mail->next = NULL;
    pthread_mutex_lock(&box->lock);
    if (box->tail)
        box->tail->next = mail;
    else
        box->head = mail;
    box->tail = mail;
    pthread_mutex_unlock(&box->lock);
    mailbox_wake(box);
}

/* Runs every mail posted so far, in order; the world may stop it between two. */
void worker_deliver_mail(struct worker *w)
{
    struct mailbox *box = &w->mailbox;
    for (;;) {
        world_park_if_stopped(w);
        pthread_mutex_lock(&box->lock);
        struct mail *mail = box->head;
        if (mail) {
            box->head = mail->next;
            if (!box->head)
                box->tail = NULL;
        }
        pthread_mutex_unlock(&box->lock);
        if (!mail)
            return;
        mail->deliver(w, mail);
    }
}

static void mailbox_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t count;
    /* Read, then clear the flag, then look at the mail: a post after the read either finds the
     * flag cleared and writes again, or its mail is already there for the look below. */
    if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        log_warning("worker %u: reading its wake-up: %s", w->index, strerror(errno));
    pthread_mutex_lock(&w->mailbox.lock);
    w->mailbox.wake_pending = false;
    pthread_mutex_unlock(&w->mailbox.lock);
    worker_deliver_mail(w);
}

int mailbox_init(struct worker *w)
{
    struct mailbox *box = &w->mailbox;
    pthread_mutex_init(&box->lock, NULL);
    box->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (box->wake_fd < 0) {
        log_error("eventfd: %s", strerror(errno));
        return -1;
    }
    box->wake_event = event_new(w->base, box->wake_fd, EV_READ | EV_PERSIST, mailbox_cb, w);
    if (!box->wake_event || event_add(box->wake_event, NULL) != 0)
        return -1;
    return 0;
}

void mailbox_free(struct worker *w)
{
    struct mailbox *box = &w->mailbox;
    if (box->wake_event)
        event_free(box->wake_event);
    box->wake_event = NULL;
    if (box->wake_fd > 0)
        close(box->wake_fd);
    box->wake_fd = -1;
    pthread_mutex_destroy(&box->lock);
}

int world_init(struct world *world, size_t n_workers)
{
    memset(world, 0, sizeof(*world));
    world->workers = calloc(n_workers, sizeof(*world->workers));
    if (!world->workers)
        return -1;
    world->n_workers = n_workers;
    pthread_mutex_init(&world->stop_lock, NULL);
    pthread_cond_init(&world->stop_cond, NULL);
    atomic_init(&world->n_clients, 0);
    atomic_init(&world->exiting, false);
    atomic_init(&world->next_id, 0);
    pool_registry_init(&world->pools);
    return 0;
}

void world_free(struct world *world)
{
    free(world->workers);
    world->workers = NULL;
    pool_registry_free(&world->pools);
    pthread_mutex_destroy(&world->stop_lock);
    pthread_cond_destroy(&world->stop_cond);
}
