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
#include <liburing.h>

struct write_batch {
    struct io_uring ring;
    int queued;
    struct msghdr messages[WRITE_BATCH_SIZE];
    struct iovec pieces[WRITE_BATCH_SIZE][WRITE_BATCH_MAX_IOV];
};

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
