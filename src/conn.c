/*
 * conn.c: the byte-moving and socket helpers that client and server connections share.
 * Message bytes move between bufferevents as evbuffer chains, never copied on the hot path.
 */
#include "conn.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

bool conn_send(struct bufferevent *bev, const struct msgbuf *mb)
{
    if (mb->failed)
        return false;
    return bufferevent_write(bev, mb->data, mb->len) == 0;
}

size_t conn_forward(struct bufferevent *src, struct bufferevent *dst, uint32_t *remaining)
{
    struct evbuffer *in = bufferevent_get_input(src);
    size_t available = evbuffer_get_length(in);
    size_t amount = available < *remaining ? available : *remaining;

    if (amount == 0)
        return 0;
    if (amount == available)
        evbuffer_add_buffer(bufferevent_get_output(dst), in);
    else
        evbuffer_remove_buffer(in, bufferevent_get_output(dst), amount);
    *remaining -= (uint32_t)amount;
    return amount;
}

enum proto_result conn_peek_header(struct evbuffer *buf, uint32_t max_len, uint8_t *type,
                                   uint32_t *msg_len)
{
    uint8_t header[PROTO_HEADER_LEN];

    if (evbuffer_copyout(buf, header, sizeof(header)) < (ev_ssize_t)sizeof(header))
        return PROTO_INCOMPLETE;
    return proto_peek_header(header, sizeof(header), max_len, type, msg_len);
}

const uint8_t *conn_pullup_message(struct evbuffer *buf, uint32_t msg_len)
{
    size_t whole = (size_t)msg_len + 1;

    if (evbuffer_get_length(buf) < whole)
        return NULL;
    return evbuffer_pullup(buf, (ev_ssize_t)whole);
}

void conn_tune_socket(int fd, bool keepalive)
{
    int on = 1;
    /* Both fail harmlessly with EOPNOTSUPP/ENOPROTOOPT on unix sockets. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (keepalive)
        (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
}

bool conn_output_is_full(struct bufferevent *dst)
{
    return evbuffer_get_length(bufferevent_get_output(dst)) > CONN_OUTPUT_HIGH_WATER;
}
