/*
 * write_batch.c: sends queued by the flusher, submitted to io_uring in one io_uring_enter.
 * Each send carries MSG_DONTWAIT, which makes the kernel run it inline during the submission and
 * report EAGAIN rather than park it until the socket is writable, so every completion is there
 * when the submission returns and no buffer is referenced after it.
 */
#include "write_batch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <liburing.h>

struct write_batch {
    struct io_uring ring;
    int queued;
    struct msghdr messages[WRITE_BATCH_SIZE];
    struct iovec pieces[WRITE_BATCH_SIZE][WRITE_BATCH_MAX_IOV];
};

/*
 * Sends with MSG_DONTWAIT complete during the submission on current kernels, reporting EAGAIN
 * when the socket is full; some older ones park them until the socket drains instead, which
 * would leave write_batch_send waiting. Checked once on a socket pair whose buffer is full.
 */
static bool sends_never_wait(struct io_uring *ring)
{
    int pair[2];
    char byte = 0;
    bool inline_eagain = false;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0)
        return false;
    while (send(pair[0], &byte, sizeof(byte), MSG_DONTWAIT) == 1)
        ; /* fill it up */
    struct iovec piece = { .iov_base = &byte, .iov_len = sizeof(byte) };
    struct msghdr message = { .msg_iov = &piece, .msg_iovlen = 1 };
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    io_uring_prep_sendmsg(sqe, pair[0], &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    struct io_uring_cqe *cqe = NULL;
    if (io_uring_submit(ring) == 1 && io_uring_peek_cqe(ring, &cqe) == 0) {
        inline_eagain = cqe->res == -EAGAIN;
        io_uring_cqe_seen(ring, cqe);
    }
    close(pair[0]); /* a parked send ends with its socket (and the ring, freed by the caller) */
    close(pair[1]);
    return inline_eagain;
}

struct write_batch *write_batch_new(char *why, size_t why_len)
{
    struct write_batch *batch = calloc(1, sizeof(*batch));
    if (!batch) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    /* COOP_TASKRUN: no interrupt to run completion work; SUBMIT_ALL: one bad send does not
     * stop the rest. Kernels before 5.19 know neither: try again without them. */
    int rc = io_uring_queue_init(WRITE_BATCH_SIZE, &batch->ring,
                                 IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL);
    if (rc == -EINVAL)
        rc = io_uring_queue_init(WRITE_BATCH_SIZE, &batch->ring, 0);
    if (rc < 0) {
        snprintf(why, why_len, "%s", strerror(-rc));
        free(batch);
        return NULL;
    }
    if (!sends_never_wait(&batch->ring)) {
        snprintf(why, why_len, "this kernel parks non-blocking sends instead of failing them");
        io_uring_queue_exit(&batch->ring);
        free(batch);
        return NULL;
    }
    return batch;
}

void write_batch_free(struct write_batch *batch)
{
    if (!batch)
        return;
    io_uring_queue_exit(&batch->ring);
    free(batch);
}

bool write_batch_is_full(const struct write_batch *batch)
{
    return batch->queued >= WRITE_BATCH_SIZE;
}

void write_batch_add(struct write_batch *batch, int fd, const struct iovec *iov, int iovcnt)
{
    int slot = batch->queued++;
    struct msghdr *message = &batch->messages[slot];

    if (iovcnt > WRITE_BATCH_MAX_IOV)
        iovcnt = WRITE_BATCH_MAX_IOV;
    memcpy(batch->pieces[slot], iov, (size_t)iovcnt * sizeof(*iov));
    memset(message, 0, sizeof(*message));
    message->msg_iov = batch->pieces[slot];
    message->msg_iovlen = (size_t)iovcnt;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&batch->ring);
    io_uring_prep_sendmsg(sqe, fd, message, MSG_DONTWAIT | MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, (unsigned long long)slot);
}

int write_batch_send(struct write_batch *batch, ssize_t results[WRITE_BATCH_SIZE])
{
    int queued = batch->queued;

    batch->queued = 0;
    for (int i = 0; i < queued; i++)
        results[i] = -ECANCELED;
    if (queued == 0)
        return 0;
    /* MSG_DONTWAIT sends complete during the submission: their completions are posted by the
     * time it returns, and the waits below return at once. */
    int rc;
    do {
        rc = io_uring_submit(&batch->ring); /* a signal interrupts before any send is taken */
    } while (rc == -EINTR);
    int submitted = rc < 0 ? 0 : rc;
    for (int done = 0; done < submitted;) {
        struct io_uring_cqe *cqe;
        int wait = io_uring_wait_cqe(&batch->ring, &cqe);
        if (wait == -EINTR)
            continue;
        if (wait < 0)
            return wait;
        unsigned long long slot = io_uring_cqe_get_data64(cqe);
        if (slot < (unsigned long long)queued)
            results[slot] = cqe->res;
        io_uring_cqe_seen(&batch->ring, cqe);
        done++;
    }
    if (submitted != queued)
        return rc < 0 ? rc : -EIO;
    return queued;
}
