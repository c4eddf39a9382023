/*
 * write_batch.h: the output of many sockets sent with one system call (io_uring).
 *
 * Every write to a local peer wakes the task reading it, and a task woken on sluice's core
 * preempts sluice when the write's system call returns. Written one system call per connection,
 * a loop iteration's output costs up to one preemption per connection; submitted as one batch,
 * it costs at most one. The sends never wait: a socket whose buffer is full reports EAGAIN, and
 * the caller waits for writability as it would after writev.
 */
#ifndef SLUICE_WRITE_BATCH_H
#define SLUICE_WRITE_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Sends per batch, and pieces (iovecs) per send. */
#define WRITE_BATCH_SIZE 64
#define WRITE_BATCH_MAX_IOV 16

struct write_batch;

/* A batch writer, or NULL with the reason in why (io_uring disabled or refused by the kernel). */
struct write_batch *write_batch_new(char *why, size_t why_len);
void write_batch_free(struct write_batch *batch);

bool write_batch_is_full(const struct write_batch *batch);

/*
 * Queues a send of iov[0..iovcnt) on fd (at most WRITE_BATCH_MAX_IOV pieces; the array is
 * copied, the bytes it points to must stay put until write_batch_send returns).
 */
void write_batch_add(struct write_batch *batch, int fd, const struct iovec *iov, int iovcnt);

/*
 * Sends everything queued, in one system call, and empties the batch. results[i] is the byte
 * count of the i-th send queued, or -errno (-EAGAIN: the socket's buffer was full; -ECANCELED:
 * not sent). Returns the number of sends, or -errno if some could not be submitted: the writer
 * is then broken and must be freed.
 */
int write_batch_send(struct write_batch *batch, ssize_t results[WRITE_BATCH_SIZE]);

#endif
