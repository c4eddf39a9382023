/*
 * test_write_batch.c: sends batched through io_uring, on socket pairs: each result belongs to its
 * own send, a full socket reports EAGAIN instead of waiting, a closed peer reports EPIPE without
 * a SIGPIPE, and a send carries at most WRITE_BATCH_MAX_IOV pieces.
 */
#include "write_batch.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"

struct pair {
    int near, far;
};

static int open_pair(struct pair *p)
{
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
        return -1;
    p->near = fds[0];
    p->far = fds[1];
    return 0;
}

static void close_pair(struct pair *p)
{
    close(p->near);
    if (p->far >= 0)
        close(p->far);
}

static void fill_up(int fd)
{
    char chunk[4096] = { 0 };
    while (send(fd, chunk, sizeof(chunk), MSG_DONTWAIT) > 0)
        ;
}

static void test_results_belong_to_their_sends(struct write_batch *batch)
{
    struct pair pairs[3];
    const char *heads[3] = { "first-", "second--", "third---" };
    const char *tails[3] = { "a", "bb", "ccc" };
    ssize_t results[WRITE_BATCH_SIZE];

    for (int i = 0; i < 3; i++) {
        if (open_pair(&pairs[i]) != 0) {
            ok(0, "socketpair");
            return;
        }
        struct iovec pieces[2] = { { (void *)heads[i], strlen(heads[i]) },
                                   { (void *)tails[i], strlen(tails[i]) } };
        write_batch_add(batch, pairs[i].near, pieces, 2);
    }
    is_int(write_batch_send(batch, results), 3, "three sends in one submission");
    for (int i = 0; i < 3; i++) {
        char got[64] = { 0 }, want[64];
        snprintf(want, sizeof want, "%s%s", heads[i], tails[i]);
        is_int(results[i], (long long)strlen(want), "send %d reports its own byte count", i);
        ssize_t n = read(pairs[i].far, got, sizeof got - 1);
        ok(n == (ssize_t)strlen(want) && strcmp(got, want) == 0,
           "peer %d reads its own bytes, both pieces in order (%s)", i, got);
        close_pair(&pairs[i]);
    }
}

static void test_full_socket_reports_eagain(struct write_batch *batch)
{
    struct pair full, open;
    ssize_t results[WRITE_BATCH_SIZE];
    char byte = 'x';
    struct iovec piece = { &byte, 1 };

    if (open_pair(&full) != 0 || open_pair(&open) != 0) {
        ok(0, "socketpair");
        return;
    }
    fill_up(full.near);
    write_batch_add(batch, full.near, &piece, 1);
    write_batch_add(batch, open.near, &piece, 1);
    is_int(write_batch_send(batch, results), 2, "both sends submitted");
    is_int(results[0], -EAGAIN, "a full socket reports EAGAIN at once, without waiting");
    is_int(results[1], 1, "the send after it in the same batch still goes out");
    close_pair(&full);
    close_pair(&open);
}

static void test_closed_peer_reports_epipe(struct write_batch *batch)
{
    struct pair p;
    ssize_t results[WRITE_BATCH_SIZE];
    char byte = 'x';
    struct iovec piece = { &byte, 1 };

    if (open_pair(&p) != 0) {
        ok(0, "socketpair");
        return;
    }
    close(p.far);
    p.far = -1;
    write_batch_add(batch, p.near, &piece, 1);
    is_int(write_batch_send(batch, results), 1, "submitted");
    is_int(results[0], -EPIPE, "a closed peer reports EPIPE (and no SIGPIPE ends this test)");
    close_pair(&p);
}

static void test_pieces_are_capped(struct write_batch *batch)
{
    struct pair p;
    struct iovec pieces[WRITE_BATCH_MAX_IOV + 4];
    char bytes[WRITE_BATCH_MAX_IOV + 4];
    ssize_t results[WRITE_BATCH_SIZE];

    if (open_pair(&p) != 0) {
        ok(0, "socketpair");
        return;
    }
    for (int i = 0; i < WRITE_BATCH_MAX_IOV + 4; i++) {
        bytes[i] = (char)('a' + i);
        pieces[i].iov_base = &bytes[i];
        pieces[i].iov_len = 1;
    }
    write_batch_add(batch, p.near, pieces, WRITE_BATCH_MAX_IOV + 4);
    is_int(write_batch_send(batch, results), 1, "submitted");
    is_int(results[0], WRITE_BATCH_MAX_IOV, "one send carries WRITE_BATCH_MAX_IOV pieces, no more");
    close_pair(&p);
}

static void test_full_batch(struct write_batch *batch)
{
    struct pair p;
    ssize_t results[WRITE_BATCH_SIZE];
    char byte = 'x';
    struct iovec piece = { &byte, 1 };
    int sent = 0;

    if (open_pair(&p) != 0) {
        ok(0, "socketpair");
        return;
    }
    ok(!write_batch_is_full(batch), "an empty batch is not full");
    for (int i = 0; i < WRITE_BATCH_SIZE; i++)
        write_batch_add(batch, p.near, &piece, 1);
    ok(write_batch_is_full(batch), "WRITE_BATCH_SIZE sends fill the batch");
    is_int(write_batch_send(batch, results), WRITE_BATCH_SIZE, "all of them submitted at once");
    for (int i = 0; i < WRITE_BATCH_SIZE; i++)
        sent += results[i] == 1;
    is_int(sent, WRITE_BATCH_SIZE, "every one sent its byte");
    ok(!write_batch_is_full(batch), "sending empties the batch");
    is_int(write_batch_send(batch, results), 0, "an empty batch sends nothing");
    close_pair(&p);
}

int main(void)
{
    char why[128];
    struct write_batch *batch = write_batch_new(why, sizeof why);

    if (batch == NULL) {
        /* The kernel or a seccomp profile refuses io_uring: sluice itself falls back to writev. */
        printf("1..0 # SKIP io_uring is not available here: %s\n", why);
        return 0;
    }
    test_results_belong_to_their_sends(batch);
    test_full_socket_reports_eagain(batch);
    test_closed_peer_reports_epipe(batch);
    test_pieces_are_capped(batch);
    test_full_batch(batch);
    write_batch_free(batch);
    return tap_done();
}
