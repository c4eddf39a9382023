/*
 * idle_clients: opens N PostgreSQL connections, completes each login (trust or cleartext
 * password), then holds them all idle until its standard input closes or it gets SIGTERM.
 *
 *   idle_clients HOST PORT USER DBNAME N [TIMEOUT_SECONDS]
 *
 * Prints "READY <n>" on stdout once all N logins have reached ReadyForQuery, then, when told to
 * stop, "DONE lost=<k>" (k: connections the server closed while they were idle). On failure it
 * prints "FAIL ..." and exits 1. PGPASSWORD is sent if the server asks for a cleartext password;
 * other authentication methods are refused (the benchmark measures idle memory, not auth).
 *
 * The protocol is spoken by hand so that each connection costs the client a socket and a few
 * hundred bytes, and 10,000 of them fit comfortably beside the proxy being measured.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_INFLIGHT 64
#define BODY_KEEP 256

enum state { ST_NEW, ST_CONNECTING, ST_LOGIN, ST_READY, ST_CLOSED };

struct conn {
    int fd;
    enum state st;
    unsigned char hdr[5];
    int hdr_got;
    uint32_t body_len;   /* of the current message */
    uint32_t body_got;
    unsigned char body[BODY_KEEP];
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static uint32_t get32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int write_all(int fd, const unsigned char *buf, size_t len)
{
    /* Login messages are tiny: a fresh socket's send buffer always takes them whole. */
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    return n == (ssize_t)len ? 0 : -1;
}

static const char *g_user, *g_db, *g_password;

static int send_startup(int fd)
{
    unsigned char buf[512];
    size_t off = 8;
    const char *kv[] = {"user", g_user, "database", g_db};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        size_t l = strlen(kv[i]) + 1;
        if (off + l + 1 > sizeof buf)
            return -1;
        memcpy(buf + off, kv[i], l);
        off += l;
    }
    buf[off++] = 0;
    put32(buf, (uint32_t)off);
    put32(buf + 4, 196608); /* protocol 3.0 */
    return write_all(fd, buf, off);
}

static int send_password(int fd)
{
    unsigned char buf[1024];
    size_t l = strlen(g_password) + 1;
    if (l + 5 > sizeof buf)
        return -1;
    buf[0] = 'p';
    put32(buf + 1, (uint32_t)(4 + l));
    memcpy(buf + 5, g_password, l);
    return write_all(fd, buf, 5 + l);
}

static void error_text(const struct conn *c, char *out, size_t outlen)
{
    /* ErrorResponse fields: type byte, cstring; we want 'M' (message). */
    size_t n = c->body_got < BODY_KEEP ? c->body_got : BODY_KEEP;
    size_t i = 0;
    snprintf(out, outlen, "unknown error");
    while (i < n && c->body[i]) {
        char t = (char)c->body[i++];
        size_t start = i;
        while (i < n && c->body[i])
            i++;
        if (t == 'M') {
            snprintf(out, outlen, "%.*s", (int)(i - start), (const char *)c->body + start);
            return;
        }
        i++;
    }
}

/* One complete message has arrived. Returns 1 when ready, 0 to go on, -1 on failure. */
static int on_message(struct conn *c, char *err, size_t errlen)
{
    char type = (char)c->hdr[0];
    if (type == 'E') {
        error_text(c, err, errlen);
        return -1;
    }
    if (type == 'Z')
        return 1;
    if (type == 'R') {
        uint32_t code = c->body_got >= 4 ? get32(c->body) : 99;
        if (code == 0)
            return 0;
        if (code == 3 && g_password) {
            if (send_password(c->fd) < 0) {
                snprintf(err, errlen, "sending password: %s", strerror(errno));
                return -1;
            }
            return 0;
        }
        snprintf(err, errlen, "server asked for authentication method %u; use trust (or cleartext with PGPASSWORD)", code);
        return -1;
    }
    return 0; /* ParameterStatus, BackendKeyData, NoticeResponse... */
}

/*
 * Reads what is available. Returns 1 when ReadyForQuery arrived, 0 on "more later",
 * -1 on error (err filled), -2 on EOF.
 */
static int pump(struct conn *c, char *err, size_t errlen)
{
    unsigned char buf[4096];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0)
            return -2;
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            snprintf(err, errlen, "recv: %s", strerror(errno));
            return -1;
        }
        ssize_t i = 0;
        int ready = 0;
        while (i < n) {
            if (c->hdr_got < 5) {
                c->hdr[c->hdr_got++] = buf[i++];
                if (c->hdr_got == 5) {
                    uint32_t len = get32(c->hdr + 1);
                    if (len < 4) {
                        snprintf(err, errlen, "bad message length %u", len);
                        return -1;
                    }
                    c->body_len = len - 4;
                    c->body_got = 0;
                }
            } else {
                uint32_t want = c->body_len - c->body_got;
                uint32_t take = (uint32_t)(n - i) < want ? (uint32_t)(n - i) : want;
                if (c->body_got < BODY_KEEP) {
                    uint32_t keep = BODY_KEEP - c->body_got < take ? BODY_KEEP - c->body_got : take;
                    memcpy(c->body + c->body_got, buf + i, keep);
                }
                c->body_got += take;
                i += take;
            }
            if (c->hdr_got == 5 && c->body_got == c->body_len) {
                int r = on_message(c, err, errlen);
                c->hdr_got = 0;
                if (r < 0)
                    return -1;
                if (r == 1)
                    ready = 1;
            }
        }
        if (ready && c->st == ST_LOGIN)
            return 1;
    }
}

static void raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (long)rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || (long)rl.rlim_max >= need ? (rlim_t)need : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT USER DBNAME N [TIMEOUT_SECONDS]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2];
    g_user = argv[3];
    g_db = argv[4];
    g_password = getenv("PGPASSWORD");
    long n = strtol(argv[5], NULL, 10);
    double timeout = argc > 6 ? atof(argv[6]) : 300;
    if (n <= 0) {
        fprintf(stderr, "N must be positive\n");
        return 2;
    }
    raise_nofile(n + 64);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct addrinfo hints = {0}, *ai;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        printf("FAIL resolving %s:%s: %s\n", host, port, gai_strerror(gai));
        return 1;
    }

    struct conn *conns = calloc((size_t)n, sizeof *conns);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || ep < 0) {
        printf("FAIL out of memory\n");
        return 1;
    }
    for (long i = 0; i < n; i++)
        conns[i].fd = -1;

    long next = 0, inflight = 0, ready = 0;
    double deadline = now_s() + timeout;
    struct epoll_event evs[256];
    char err[300];

    while (ready < n) {
        while (next < n && inflight < MAX_INFLIGHT) {
            struct conn *c = &conns[next];
            c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c->fd < 0) {
                printf("FAIL connected=%ld/%ld: socket: %s\n", ready, n, strerror(errno));
                return 1;
            }
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            int r = connect(c->fd, ai->ai_addr, ai->ai_addrlen);
            if (r < 0 && errno != EINPROGRESS) {
                printf("FAIL connected=%ld/%ld: connect: %s\n", ready, n, strerror(errno));
                return 1;
            }
            c->st = ST_CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            next++;
            inflight++;
        }
        if (stop_flag || now_s() > deadline) {
            printf("FAIL connected=%ld/%ld: %s\n", ready, n, stop_flag ? "interrupted" : "timed out");
            return 1;
        }
        int k = epoll_wait(ep, evs, 256, 200);
        for (int e = 0; e < k; e++) {
            struct conn *c = evs[e].data.ptr;
            if (c->st == ST_CONNECTING) {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                if (soerr) {
                    printf("FAIL connected=%ld/%ld: connect: %s\n", ready, n, strerror(soerr));
                    return 1;
                }
                if (send_startup(c->fd) < 0) {
                    printf("FAIL connected=%ld/%ld: sending startup: %s\n", ready, n, strerror(errno));
                    return 1;
                }
                c->st = ST_LOGIN;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            if (c->st != ST_LOGIN)
                continue;
            int r = pump(c, err, sizeof err);
            if (r == -2) {
                printf("FAIL connected=%ld/%ld: server closed a connection during login\n", ready, n);
                return 1;
            }
            if (r < 0) {
                printf("FAIL connected=%ld/%ld: %s\n", ready, n, err);
                return 1;
            }
            if (r == 1) {
                c->st = ST_READY;
                ready++;
                inflight--;
            }
        }
    }
    printf("READY %ld\n", ready);

    /* Hold: watch stdin for EOF and the sockets for the server hanging up. */
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = NULL};
    int watch_stdin = epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev) == 0;
    long lost = 0;
    while (!stop_flag) {
        int k = epoll_wait(ep, evs, 256, 1000);
        for (int e = 0; e < k; e++) {
            struct conn *c = evs[e].data.ptr;
            if (!c) {
                char b[256];
                ssize_t r = read(0, b, sizeof b);
                if (r <= 0)
                    stop_flag = 1;
                continue;
            }
            if (c->st != ST_READY)
                continue;
            int r = pump(c, err, sizeof err);
            if (r == -2 || r == -1) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->st = ST_CLOSED;
                lost++;
            }
        }
        (void)watch_stdin;
    }
    printf("DONE lost=%ld\n", lost);
    for (long i = 0; i < n; i++)
        if (conns[i].fd >= 0 && conns[i].st != ST_CLOSED)
            close(conns[i].fd);
    return 0;
}
