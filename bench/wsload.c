/*
 * wsload: the WebSocket load generator of bench/http_ws.py and bench/broker_fanout.py.
 *
 * Single-threaded, non-blocking, level-triggered epoll, so that it is not what
 * limits a Python server. Every connection first does the opening handshake
 * (GET with Upgrade: websocket, a fixed Sec-WebSocket-Key, no extension
 * offered, so neither server compresses) and must get "HTTP/1.1 101". Client
 * frames are masked (RFC 6455 5.3) text frames of `size` printable bytes,
 * built once and sent back to back from a pattern; server frames are parsed
 * (2-, 4- or 10-byte headers, unmasked), and every text or binary message
 * must be exactly the payload that was sent, else it counts as an error.
 * Pings are counted, not answered: a run is far shorter than the servers'
 * ping interval plus ping timeout (20 s + 20 s). Two modes (--mode):
 *
 * echo (default): closed loop. Each of `connections` connections keeps
 *   `pipeline` messages in flight: it sends `pipeline` messages and sends one
 *   more each time an echoed message comes back. Latency: each message is
 *   stamped (CLOCK_MONOTONIC, once per loop turn) when it is queued and when
 *   its echo is parsed; percentiles come from a log-linear histogram.
 *
 * fanout: `connections` subscribers open PATH/sub, then one publisher opens
 *   PATH/pub; the server sends every message of the publisher to every
 *   subscriber. The publisher sends single messages every 20 ms until every
 *   subscriber has one (so each is known to be registered), waits 200 ms,
 *   and from then on keeps at most `pipeline` messages ahead of the slowest
 *   subscriber. msgs counts deliveries (one publication = `connections`).
 *
 * --ports P1,P2,...: the subscribers are spread over several servers, one port
 *   each (subscriber i on the (i mod n)-th), the publisher on the first: the
 *   fan-out across instances sharing a broker (bench/broker_fanout.py).
 *
 * --eio: speak Socket.IO over Engine.IO 4's WebSocket transport, as
 *   socket.io-client does after its handshake: every connection opens
 *   /socket.io/?EIO=4&transport=websocket, sends the "40" packet (connect to
 *   the main namespace) and is ready once the server's "40{...}" comes; the
 *   message is the event packet 42["m","abc..."] of `size` bytes, sent and
 *   checked byte for byte like any other; the server's open ("0{...}"),
 *   connect, ping ("2") and pong packets are not messages (pings are counted,
 *   not answered: the bench server's ping interval is longer than a run).
 *
 * Output: on stdout, {"event": "window_open"} when the measured window opens
 * and {"event": "window_close"} when it closes (so the driver can read the
 * server's CPU time at those instants), then one JSON result line. Over the
 * window: cpu_seconds is this process's CPU time (getrusage); wait_seconds the
 * time spent in epoll_wait(), so 1 - wait_seconds/seconds is how busy the
 * generator was (near 1: it may be the bottleneck); runq_wait_seconds the
 * time it was runnable while another task had its CPU.
 *
 * Rules it keeps: never more than `pipeline` messages in flight per
 * connection; every wait has a deadline and alarm() kills a hung run. Exit
 * status: 0 on a completed run, 1 on bad arguments, 2 if a connection or a
 * handshake failed or the fanout subscribers could not be synchronised.
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -o wsload wsload.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF_SIZE (256 * 1024)
#define MAX_EVENTS 1024
#define EPOLL_TIMEOUT_MS 50
#define CONNECT_TIMEOUT_S 5
#define HANDSHAKE_TIMEOUT_S 30.0
#define ALARM_SLACK_S 30
#define SYNC_TIMEOUT_S 10.0
#define SYNC_EVERY_S 0.02
#define SYNC_SETTLE_S 0.2
/* Longest handshake response accepted. */
#define MAX_HEAD 4096
#define HSUB 64
#define MAX_PORTS 8
/* Longest server frame accepted in --eio mode besides the message: the
 * Engine.IO open packet ("0{"sid":...,"pingInterval":...}") is ~120 bytes. */
#define EIO_CONTROL_MAX 512
#define EIO_PATH "/socket.io/?EIO=4&transport=websocket"
#define HBUCKETS (HSUB * 40)

enum { MODE_ECHO, MODE_FANOUT };

struct conn {
    int fd;
    int open;
    int upgraded;     /* the 101 has come */
    int ready;        /* upgraded and, with --eio, the server's "40" has come */
    int want_out;     /* EPOLLOUT armed */
    uint64_t sent;    /* bytes sent so far (offset into the frame pattern) */
    uint64_t to_send; /* bytes queued but not yet sent */
    uint64_t queued;  /* messages queued so far (echo: index into the stamp ring) */
    uint64_t done;    /* messages received so far */
    uint64_t missed;  /* fanout: publications sent before the server registered it */
    unsigned char *rest; /* a partial frame (or handshake response) kept between reads */
    size_t rest_len;
};

static struct conn *conns;
static struct conn pub; /* fanout: the publisher */
static uint64_t *stamps;
static uint64_t *pub_stamps;
static uint64_t ring;
static int nconns = 50;
static int mode = MODE_ECHO;
static int eio; /* --eio: Socket.IO packets over Engine.IO's WebSocket transport */
static int nports; /* servers the subscribers are spread over (--ports) */
static int epfd = -1;
static long msg_size = 64;
static long pipeline = 1;
static const char *path = "/";
static unsigned char *payload;    /* the message, unmasked */
static unsigned char *pattern;    /* masked client frames back to back */
static size_t frame_len;          /* one client frame */
static size_t rest_cap;           /* capacity of conn.rest */
static uint64_t max_payload;      /* longest server frame payload accepted */
static unsigned char readbuf[READ_BUF_SIZE];
static uint64_t errors, pings;
static int open_conns;
static int stopping;
static int measuring;
static uint64_t hist[HBUCKETS], hist_n, hist_max;
static uint64_t n_reads, n_sends, n_waits;
static const unsigned char MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double now_s(void) { return (double)now_ns() / 1e9; }

static double runq_wait_s(void)
{
    unsigned long long run_ns, wait_ns;
    double s = 0.0;
    FILE *f = fopen("/proc/self/schedstat", "r");
    if (f == NULL)
        return 0.0;
    if (fscanf(f, "%llu %llu", &run_ns, &wait_ns) == 2)
        s = (double)wait_ns / 1e9;
    fclose(f);
    return s;
}

static void cpu_s(double *user, double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void hist_add(uint64_t v)
{
    unsigned idx;
    if (v < HSUB) {
        idx = (unsigned)v;
    } else {
        int e = 63 - __builtin_clzll(v);
        idx = (unsigned)((e - 5) * HSUB + (int)((v >> (e - 6)) & (HSUB - 1)));
    }
    if (idx >= HBUCKETS)
        idx = HBUCKETS - 1;
    hist[idx]++;
    hist_n++;
    if (v > hist_max)
        hist_max = v;
}

static double hist_quantile_us(double q)
{
    uint64_t want, seen = 0;
    unsigned i;
    if (hist_n == 0)
        return 0.0;
    want = (uint64_t)(q * (double)hist_n);
    if (want >= hist_n)
        want = hist_n - 1;
    for (i = 0; i < HBUCKETS; i++) {
        seen += hist[i];
        if (seen > want)
            break;
    }
    if (i < HSUB)
        return ((double)i + 0.5) / 1e3;
    {
        unsigned e = i / HSUB + 5, m = i % HSUB;
        double lo = (double)((uint64_t)(HSUB + m) << (e - 6));
        double width = (double)(1ull << (e - 6));
        return (lo + width / 2) / 1e3;
    }
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: wsload --port P|--ports P1,P2,... [--host H] [--path /] [--mode echo|fanout]\n"
            "              [--connections N] [--size BYTES] [--pipeline D]\n"
            "              [--duration S] [--warmup S] [--eio]\n"
            "echo: N WebSocket connections, D text messages of BYTES in flight each;\n"
            "fanout: N subscribers (PATH/sub), 1 publisher (PATH/pub) D messages ahead.\n"
            "Prints window_open / window_close event lines, then one JSON result line.\n");
}

static void conn_error(struct conn *c, const char *what, int err)
{
    static int reported;
    errors++;
    if (!reported && !stopping) {
        fprintf(stderr, "wsload: connection %ld: %s%s%s\n",
                c == &pub ? -1L : (long)(c - conns), what, err ? ": " : "",
                err ? strerror(err) : "");
        reported = 1;
    }
    if (c->open) {
        close(c->fd);
        c->open = 0;
        open_conns--;
    }
}

static void set_out(struct conn *c, int on)
{
    struct epoll_event ev;
    if (c->want_out == on)
        return;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        conn_error(c, "epoll_ctl", errno);
        return;
    }
    c->want_out = on;
}

/* Send what is queued, from the frame pattern. */
static void flush(struct conn *c)
{
    while (c->open && c->to_send > 0) {
        size_t off = (size_t)(c->sent % (uint64_t)frame_len);
        size_t len = c->to_send < READ_BUF_SIZE ? (size_t)c->to_send : READ_BUF_SIZE;
        ssize_t n = send(c->fd, pattern + off, len, MSG_NOSIGNAL);
        n_sends++;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_out(c, 1);
                return;
            }
            conn_error(c, "send", errno);
            return;
        }
        c->sent += (uint64_t)n;
        c->to_send -= (uint64_t)n;
        if ((size_t)n < len) {
            set_out(c, 1);
            return;
        }
    }
    if (c->open && c->want_out)
        set_out(c, 0);
}

/* Parse the server frames in buf[0:len]; keep a partial one in c->rest.
 * Return the number of data messages, each checked against the payload. */
static uint64_t parse_frames(struct conn *c, const unsigned char *buf, size_t len)
{
    size_t pos = 0;
    uint64_t done = 0;
    while (len - pos >= 2) {
        unsigned b0 = buf[pos], b1 = buf[pos + 1];
        uint64_t n = b1 & 0x7f;
        size_t hl = 2;
        unsigned op = b0 & 0x0f;
        if (b1 & 0x80) {
            conn_error(c, "the server sent a masked frame", 0);
            return done;
        }
        if (n == 126) {
            if (len - pos < 4)
                break;
            n = ((uint64_t)buf[pos + 2] << 8) | buf[pos + 3];
            hl = 4;
        } else if (n == 127) {
            int k;
            if (len - pos < 10)
                break;
            n = 0;
            for (k = 0; k < 8; k++)
                n = (n << 8) | buf[pos + 2 + (size_t)k];
            hl = 10;
        }
        if (n > max_payload) {
            conn_error(c, "the server sent a frame longer than any message sent", 0);
            return done;
        }
        if (len - pos < hl + (size_t)n)
            break;
        if (eio && op == 1 && (n < 2 || buf[pos + hl] != '4' || buf[pos + hl + 1] != '2')) {
            /* An Engine.IO/Socket.IO packet that is not an event: open, ping,
             * pong or the namespace's connect. */
            const unsigned char *p = buf + pos + hl;
            if (n >= 2 && p[0] == '4' && p[1] == '0')
                c->ready = 1;
            else if (n >= 1 && p[0] == '2')
                pings++;
            else if (n < 1 || (p[0] != '0' && p[0] != '3')) {
                conn_error(c, "the server sent an unexpected Engine.IO packet", 0);
                return done;
            }
        } else if (op == 1 || op == 2) {
            if (!(b0 & 0x80) || n != (uint64_t)msg_size ||
                memcmp(buf + pos + hl, payload, (size_t)msg_size) != 0) {
                conn_error(c, "a message differs from the message sent", 0);
                return done;
            }
            done++;
        } else if (op == 9) {
            pings++;
        } else if (op == 8) {
            conn_error(c, "the server sent a Close frame", 0);
            return done;
        } else if (op != 10) {
            conn_error(c, "the server sent an unexpected opcode", 0);
            return done;
        }
        pos += hl + (size_t)n;
    }
    c->rest_len = len - pos;
    memcpy(c->rest, buf + pos, c->rest_len);
    return done;
}

/* Handshake bytes in c->rest: upgrade on a whole 101, error on anything else.
 * Return the messages that followed the 101 in the same read. */
static uint64_t on_head(struct conn *c)
{
    unsigned char *end = memmem(c->rest, c->rest_len, "\r\n\r\n", 4);
    size_t head, left;
    if (end == NULL) {
        if (c->rest_len >= MAX_HEAD)
            conn_error(c, "handshake response too long", 0);
        return 0;
    }
    if (c->rest_len < 12 || memcmp(c->rest, "HTTP/1.1 101", 12) != 0) {
        char line[80];
        size_t k = 0;
        while (k < sizeof line - 1 && k < c->rest_len && c->rest[k] != '\r') {
            line[k] = (char)c->rest[k];
            k++;
        }
        line[k] = 0;
        fprintf(stderr, "wsload: handshake refused: %s\n", line);
        conn_error(c, "handshake refused", 0);
        return 0;
    }
    head = (size_t)(end - c->rest) + 4;
    left = c->rest_len - head;
    c->upgraded = 1;
    if (!eio) {
        c->ready = 1;
    } else {
        /* "40": connect to the main namespace, a masked text frame. */
        static const unsigned char connect_frame[8] = {
            0x81, 0x82, 0x37, 0xfa, 0x21, 0x3d, '4' ^ 0x37, '0' ^ 0xfa,
        };
        if (send(c->fd, connect_frame, sizeof connect_frame, MSG_NOSIGNAL) !=
            (ssize_t)sizeof connect_frame) {
            conn_error(c, "cannot send the Socket.IO connect packet", errno);
            return 0;
        }
    }
    memcpy(readbuf, c->rest + head, left);
    return parse_frames(c, readbuf, left);
}

/* Read once; return the number of whole messages this read completed. */
static uint64_t on_readable(struct conn *c)
{
    ssize_t n;
    size_t have = c->rest_len;
    if (!c->upgraded) {
        do {
            n = read(c->fd, c->rest + have, MAX_HEAD - have);
        } while (n < 0 && errno == EINTR);
    } else {
        memcpy(readbuf, c->rest, have);
        do {
            n = read(c->fd, readbuf + have, sizeof readbuf - have);
            n_reads++;
        } while (n < 0 && errno == EINTR);
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        conn_error(c, "read", errno);
        return 0;
    }
    if (n == 0) {
        conn_error(c, "the server closed the connection", 0);
        return 0;
    }
    if (!c->upgraded) {
        c->rest_len += (size_t)n;
        return on_head(c);
    }
    return parse_frames(c, readbuf, have + (size_t)n);
}

/* Blocking connect and handshake request (bounded by SO_SNDTIMEO), then
 * non-blocking; exits 2 on failure. */
static void open_conn(struct conn *c, const struct addrinfo *ai, const char *host,
                      const char *port, const char *req_path, int i)
{
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    struct epoll_event ev;
    char req[1024];
    int one = 1, len;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        fprintf(stderr, "wsload: socket() for connection %d: %s\n", i + 1, strerror(errno));
        exit(2);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        fprintf(stderr, "wsload: connect to %s:%s failed (connection %d): %s\n", host, port,
                i + 1, strerror(errno));
        exit(2);
    }
    len = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n",
                   req_path, host, port);
    if (len <= 0 || (size_t)len >= sizeof req || send(fd, req, (size_t)len, MSG_NOSIGNAL) != len) {
        fprintf(stderr, "wsload: cannot send the handshake (connection %d): %s\n", i + 1,
                strerror(errno));
        exit(2);
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        fprintf(stderr, "wsload: fcntl: %s\n", strerror(errno));
        exit(2);
    }
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->open = 1;
    c->rest = malloc(rest_cap);
    if (c->rest == NULL) {
        fprintf(stderr, "wsload: out of memory\n");
        exit(2);
    }
    open_conns++;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        fprintf(stderr, "wsload: epoll_ctl: %s\n", strerror(errno));
        exit(2);
    }
}

struct window {
    double t0, t1, user0, sys0, user1, sys1, runq0, runq1, wait_s;
    uint64_t reads0, sends0, waits0;
};

static void window_open(struct window *w, double t)
{
    printf("{\"event\": \"window_open\"}\n");
    fflush(stdout);
    w->t0 = t;
    cpu_s(&w->user0, &w->sys0);
    w->runq0 = runq_wait_s();
    w->reads0 = n_reads;
    w->sends0 = n_sends;
    w->waits0 = n_waits;
}

static void window_close(struct window *w)
{
    w->t1 = now_s();
    cpu_s(&w->user1, &w->sys1);
    w->runq1 = runq_wait_s();
    printf("{\"event\": \"window_close\"}\n");
    fflush(stdout);
}

static void print_common(const struct window *w)
{
    printf("\"seconds\": %.6f, \"errors\": %llu, \"pings\": %llu, \"cpu_seconds\": %.6f, "
           "\"cpu_user\": %.6f, \"cpu_sys\": %.6f, \"wait_seconds\": %.6f, "
           "\"runq_wait_seconds\": %.6f, \"reads\": %llu, \"sends\": %llu, \"waits\": %llu, "
           "\"connections\": %d, \"open_at_end\": %d, \"size\": %ld, \"pipeline\": %ld, "
           "\"lat_samples\": %llu, \"lat_p50_us\": %.3f, \"lat_p90_us\": %.3f, "
           "\"lat_p99_us\": %.3f, \"lat_max_us\": %.3f}\n",
           w->t1 - w->t0, (unsigned long long)errors, (unsigned long long)pings,
           (w->user1 - w->user0) + (w->sys1 - w->sys0), w->user1 - w->user0,
           w->sys1 - w->sys0, w->wait_s, w->runq1 - w->runq0,
           (unsigned long long)(n_reads - w->reads0), (unsigned long long)(n_sends - w->sends0),
           (unsigned long long)(n_waits - w->waits0), nconns, open_conns, msg_size, pipeline,
           (unsigned long long)hist_n, hist_quantile_us(0.50), hist_quantile_us(0.90),
           hist_quantile_us(0.99), (double)hist_max / 1e3);
    fflush(stdout);
}

static int wait_events(struct epoll_event *events, struct window *w)
{
    double tw = now_s();
    int n = epoll_wait(epfd, events, MAX_EVENTS, EPOLL_TIMEOUT_MS);
    double t = now_s();
    n_waits++;
    if (measuring)
        w->wait_s += t - tw;
    if (n < 0) {
        if (errno != EINTR)
            fprintf(stderr, "wsload: epoll_wait: %s\n", strerror(errno));
        return errno == EINTR ? 0 : -1;
    }
    return n;
}

static void close_all(void)
{
    int i;
    stopping = 1;
    for (i = 0; i < nconns; i++) {
        if (conns[i].open) {
            close(conns[i].fd);
            conns[i].open = 0;
        }
    }
    if (pub.open) {
        close(pub.fd);
        pub.open = 0;
    }
}

/* Wait until every connection has its 101; exits 2 if one fails or times out.
 * Messages that come during the handshakes (fanout) are counted. */
static void wait_upgraded(struct epoll_event *events, struct window *w)
{
    double deadline = now_s() + HANDSHAKE_TIMEOUT_S;
    int i, waiting = 1;
    while (waiting) {
        int n = wait_events(events, w);
        if (n < 0)
            exit(2);
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->open)
                c->done += on_readable(c);
        }
        if (errors) {
            close_all();
            exit(2);
        }
        waiting = mode == MODE_FANOUT && !pub.ready;
        for (i = 0; i < nconns && !waiting; i++)
            waiting = !conns[i].ready;
        if (waiting && now_s() >= deadline) {
            fprintf(stderr, "wsload: handshakes not done after %.0f s\n", HANDSHAKE_TIMEOUT_S);
            close_all();
            exit(2);
        }
    }
}

static void queue_msgs(struct conn *c, uint64_t k, uint64_t t)
{
    uint64_t *ring_c = stamps + (size_t)(c - conns) * (size_t)pipeline;
    uint64_t j;
    for (j = 0; j < k; j++) {
        ring_c[c->queued % (uint64_t)pipeline] = t;
        c->queued++;
    }
    c->to_send += k * (uint64_t)frame_len;
}

static int run_echo(double warmup, double duration)
{
    struct epoll_event *events = calloc(MAX_EVENTS, sizeof *events);
    struct window w;
    uint64_t msgs = 0, msgs_total = 0;
    double t_warm_end, t_end;
    int i;

    memset(&w, 0, sizeof w);
    stamps = calloc((size_t)nconns * (size_t)pipeline, sizeof *stamps);
    if (!events || !stamps) {
        fprintf(stderr, "wsload: out of memory\n");
        return 1;
    }
    wait_upgraded(events, &w);
    t_warm_end = now_s() + warmup;
    t_end = t_warm_end + duration;
    {
        uint64_t t = now_ns();
        for (i = 0; i < nconns; i++) {
            queue_msgs(&conns[i], (uint64_t)pipeline, t);
            flush(&conns[i]);
        }
    }
    while (open_conns > 0) {
        int n = wait_events(events, &w);
        double t = now_s();
        uint64_t tn = now_ns();
        if (n < 0)
            break;
        if (!measuring && t >= t_warm_end) {
            measuring = 1;
            window_open(&w, t);
        }
        if (t >= t_end)
            break;
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            uint64_t done = 0, j;
            if (!c->open)
                continue;
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                done = on_readable(c);
            if (!c->open)
                continue;
            if (done) {
                uint64_t *ring_c = stamps + (size_t)(c - conns) * (size_t)pipeline;
                if (c->done + done > c->queued) {
                    conn_error(c, "the server echoed more messages than were sent", 0);
                    continue;
                }
                for (j = 0; j < done; j++) {
                    if (measuring)
                        hist_add(tn - ring_c[c->done % (uint64_t)pipeline]);
                    c->done++;
                }
                msgs_total += done;
                if (measuring)
                    msgs += done;
                queue_msgs(c, done, tn);
            }
            flush(c);
        }
    }
    if (!measuring)
        window_open(&w, now_s());
    window_close(&w);
    close_all();
    printf("{\"mode\": \"echo\", \"msgs\": %llu, \"msgs_total\": %llu, \"msgs_per_s\": %.1f, ",
           (unsigned long long)msgs, (unsigned long long)msgs_total,
           w.t1 - w.t0 > 0 ? (double)msgs / (w.t1 - w.t0) : 0.0);
    print_common(&w);
    free(events);
    free(stamps);
    return 0;
}

static uint64_t slowest(uint64_t published)
{
    uint64_t lo = published;
    int i;
    for (i = 0; i < nconns; i++)
        if (conns[i].open && conns[i].missed + conns[i].done < lo)
            lo = conns[i].missed + conns[i].done;
    return lo;
}

static void publish(uint64_t k, uint64_t t, uint64_t *published)
{
    uint64_t j;
    for (j = 0; j < k; j++) {
        pub_stamps[*published % ring] = t;
        (*published)++;
    }
    pub.to_send += k * (uint64_t)frame_len;
    flush(&pub);
}

static uint64_t fanout_event(struct epoll_event *ev, uint64_t tn, int sync)
{
    struct conn *c = ev->data.ptr;
    uint64_t done = 0, j;
    if (!c->open)
        return 0;
    if (c == &pub) {
        if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(&pub); /* anything the server sends the publisher: checked, dropped */
        if (pub.open)
            flush(&pub);
        return 0;
    }
    if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        done = on_readable(c);
    if (!sync && measuring)
        for (j = 0; j < done; j++)
            hist_add(tn - pub_stamps[(c->missed + c->done + j) % ring]);
    c->done += done;
    return done;
}

static int run_fanout(double warmup, double duration)
{
    struct epoll_event *events = calloc(MAX_EVENTS, sizeof *events);
    struct window w;
    uint64_t msgs = 0, msgs_total = 0, published = 0, published0 = 0, lo;
    double t_sync_end, t_next, t_warm_end, t_end, t_synced = 0.0;
    int i, synced = 0, dirty = 0;

    memset(&w, 0, sizeof w);
    ring = (uint64_t)pipeline + 2;
    pub_stamps = calloc((size_t)ring, sizeof *pub_stamps);
    if (!events || !pub_stamps) {
        fprintf(stderr, "wsload: out of memory\n");
        return 1;
    }
    wait_upgraded(events, &w);
    for (i = 0; i < nconns; i++)
        conns[i].done = 0;
    t_sync_end = now_s() + SYNC_TIMEOUT_S;
    t_next = now_s();
    for (;;) {
        double t = now_s();
        int n, waiting = 0;
        if (t >= t_sync_end) {
            for (i = 0; i < nconns; i++)
                waiting += conns[i].open && conns[i].done == 0;
            fprintf(stderr, "wsload: %d of %d subscribers got nothing in %.0f s\n", waiting,
                    nconns, SYNC_TIMEOUT_S);
            close_all();
            return 2;
        }
        if (!synced && t >= t_next) {
            publish(1, now_ns(), &published);
            t_next = t + SYNC_EVERY_S;
        }
        if (synced && t >= t_synced + SYNC_SETTLE_S)
            break;
        n = wait_events(events, &w);
        if (n < 0)
            return 1;
        for (i = 0; i < n; i++)
            fanout_event(&events[i], 0, 1);
        if (!pub.open || open_conns <= 1 || errors) {
            fprintf(stderr, "wsload: connections lost while synchronising\n");
            close_all();
            return 2;
        }
        if (!synced) {
            synced = 1;
            for (i = 0; i < nconns && synced; i++)
                synced = !conns[i].open || conns[i].done > 0;
            if (synced)
                t_synced = now_s();
        }
    }
    for (i = 0; i < nconns; i++) {
        if (conns[i].done > published) {
            conn_error(&conns[i], "got more messages than were published", 0);
            continue;
        }
        conns[i].missed = published - conns[i].done;
    }
    lo = slowest(published);
    t_warm_end = now_s() + warmup;
    t_end = t_warm_end + duration;
    while (pub.open && open_conns > 1) {
        int n;
        double t;
        uint64_t tn;
        if (dirty) {
            lo = slowest(published);
            dirty = 0;
        }
        if (published - lo < (uint64_t)pipeline && pub.to_send == 0)
            publish((uint64_t)pipeline - (published - lo), now_ns(), &published);
        n = wait_events(events, &w);
        t = now_s();
        tn = now_ns();
        if (n < 0)
            break;
        if (!measuring && t >= t_warm_end) {
            measuring = 1;
            window_open(&w, t);
            published0 = published;
        }
        if (t >= t_end)
            break;
        for (i = 0; i < n; i++) {
            uint64_t done = fanout_event(&events[i], tn, 0);
            if (done) {
                dirty = 1;
                msgs_total += done;
                if (measuring)
                    msgs += done;
            }
        }
    }
    if (!measuring) {
        window_open(&w, now_s());
        published0 = published;
    }
    window_close(&w);
    close_all();
    printf("{\"mode\": \"fanout\", \"msgs\": %llu, \"msgs_total\": %llu, \"msgs_per_s\": %.1f, "
           "\"published\": %llu, \"subscribers\": %d, \"instances\": %d, \"eio\": %d, ",
           (unsigned long long)msgs, (unsigned long long)msgs_total,
           w.t1 - w.t0 > 0 ? (double)msgs / (w.t1 - w.t0) : 0.0,
           (unsigned long long)(published - published0), nconns, nports, eio);
    print_common(&w);
    free(events);
    free(pub_stamps);
    return 0;
}

static long parse_long(const char *s, const char *name, long lo, long hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        fprintf(stderr, "wsload: --%s must be an integer in [%ld, %ld], not %s\n", name, lo, hi, s);
        exit(1);
    }
    return v;
}

static double parse_double(const char *s, const char *name, double lo, double hi)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "wsload: --%s must be a number in [%g, %g], not %s\n", name, lo, hi, s);
        exit(1);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, 0, 'h'},   {"port", required_argument, 0, 'p'},
        {"connections", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
        {"pipeline", required_argument, 0, 'd'}, {"duration", required_argument, 0, 't'},
        {"warmup", required_argument, 0, 'w'}, {"mode", required_argument, 0, 'm'},
        {"path", required_argument, 0, 'P'},   {"help", no_argument, 0, '?'},
        {"ports", required_argument, 0, 'N'},  {"eio", no_argument, 0, 'E'},
        {0, 0, 0, 0},
    };
    const char *host = "127.0.0.1";
    const char *port = NULL;
    char *port_list[MAX_PORTS];
    char ports_buf[256];
    struct addrinfo *ais[MAX_PORTS];
    char sub_path[512], pub_path[512];
    double duration = 5.0, warmup = 1.0;
    struct addrinfo hints, *ai = NULL;
    size_t pattern_len, hl, k;
    struct rlimit rl;
    int opt, i, rc;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = optarg; parse_long(optarg, "port", 1, 65535); break;
        case 'E': eio = 1; break;
        case 'N': {
            char *save = NULL, *tok;
            if (strlen(optarg) >= sizeof ports_buf) {
                fprintf(stderr, "wsload: --ports is too long\n");
                return 1;
            }
            strcpy(ports_buf, optarg);
            nports = 0;
            for (tok = strtok_r(ports_buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (nports == MAX_PORTS) {
                    fprintf(stderr, "wsload: --ports takes at most %d ports\n", MAX_PORTS);
                    return 1;
                }
                parse_long(tok, "ports", 1, 65535);
                port_list[nports++] = tok;
            }
            if (nports == 0) {
                fprintf(stderr, "wsload: --ports names no port\n");
                return 1;
            }
            port = port_list[0];
            break;
        }
        case 'c': nconns = (int)parse_long(optarg, "connections", 1, 100000); break;
        case 's': msg_size = parse_long(optarg, "size", 1, 65535); break;
        case 'd': pipeline = parse_long(optarg, "pipeline", 1, 4096); break;
        case 't': duration = parse_double(optarg, "duration", 0.01, 3600); break;
        case 'w': warmup = parse_double(optarg, "warmup", 0, 3600); break;
        case 'P':
            if (optarg[0] != '/' || strlen(optarg) > 400 || strpbrk(optarg, " \r\n")) {
                fprintf(stderr, "wsload: --path must start with / (no spaces), at most 400 bytes\n");
                return 1;
            }
            path = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "echo") == 0)
                mode = MODE_ECHO;
            else if (strcmp(optarg, "fanout") == 0)
                mode = MODE_FANOUT;
            else {
                fprintf(stderr, "wsload: --mode must be echo or fanout\n");
                return 1;
            }
            break;
        default: usage(stderr); return 1;
        }
    }
    if (port == NULL || optind != argc) {
        usage(stderr);
        return 1;
    }
    if (nports == 0) {
        port_list[0] = (char *)port;
        nports = 1;
    }
    if (eio && msg_size < 11) {
        fprintf(stderr, "wsload: --eio needs --size of at least 11 (42[\"m\",\"\"] and a byte)\n");
        return 1;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    alarm((unsigned)(HANDSHAKE_TIMEOUT_S + SYNC_TIMEOUT_S + warmup + duration) + ALARM_SLACK_S);

    /* The message and its masked client frame, repeated into the pattern. */
    hl = msg_size < 126 ? 2 : 4;
    frame_len = hl + 4 + (size_t)msg_size;
    max_payload = msg_size > 125 ? (uint64_t)msg_size : 125;
    if (eio && max_payload < EIO_CONTROL_MAX)
        max_payload = EIO_CONTROL_MAX;
    rest_cap = 10 + (size_t)max_payload;
    if (rest_cap < MAX_HEAD)
        rest_cap = MAX_HEAD;
    pattern_len = frame_len * (size_t)(pipeline + 1) + READ_BUF_SIZE + frame_len;
    payload = malloc((size_t)msg_size);
    pattern = malloc(pattern_len);
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!payload || !pattern || !conns) {
        fprintf(stderr, "wsload: out of memory\n");
        return 1;
    }
    for (k = 0; k < (size_t)msg_size; k++)
        payload[k] = (unsigned char)('a' + k % 26);
    if (eio) { /* the event packet 42["m","abc..."]: the same size on the wire */
        memcpy(payload, "42[\"m\",\"", 8);
        memcpy(payload + msg_size - 2, "\"]", 2);
    }
    for (k = 0; k < pattern_len; k++) {
        size_t off = k % frame_len;
        unsigned char b;
        if (off == 0)
            b = 0x81; /* FIN, text */
        else if (off == 1)
            b = (unsigned char)(0x80 | (hl == 2 ? (unsigned)msg_size : 126u));
        else if (off < hl)
            b = (unsigned char)(off == 2 ? (msg_size >> 8) & 0xff : msg_size & 0xff);
        else if (off < hl + 4)
            b = MASK[off - hl];
        else
            b = payload[off - hl - 4] ^ MASK[(off - hl - 4) % 4];
        pattern[k] = b;
    }

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    for (i = 0; i < nports; i++) {
        rc = getaddrinfo(host, port_list[i], &hints, &ais[i]);
        if (rc != 0) {
            fprintf(stderr, "wsload: cannot resolve %s:%s: %s\n", host, port_list[i],
                    gai_strerror(rc));
            return 2;
        }
    }
    ai = ais[0];
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        fprintf(stderr, "wsload: epoll_create1: %s\n", strerror(errno));
        return 1;
    }
    {
        size_t plen = strlen(path);
        const char *sep = (plen > 0 && path[plen - 1] == '/') ? "" : "/";
        snprintf(sub_path, sizeof sub_path, "%s%ssub", path, sep);
        snprintf(pub_path, sizeof pub_path, "%s%spub", path, sep);
        if (eio) { /* Socket.IO: one path; the server tells the publisher by what it sends */
            snprintf(sub_path, sizeof sub_path, "%s", EIO_PATH);
            snprintf(pub_path, sizeof pub_path, "%s", EIO_PATH);
            path = EIO_PATH;
        }
    }
    for (i = 0; i < nconns; i++)
        open_conn(&conns[i], ais[i % nports], host, port_list[i % nports],
                  mode == MODE_FANOUT ? sub_path : path, i);
    if (mode == MODE_FANOUT)
        open_conn(&pub, ai, host, port, pub_path, nconns);
    for (i = 0; i < nports; i++)
        freeaddrinfo(ais[i]);
    rc = mode == MODE_FANOUT ? run_fanout(warmup, duration) : run_echo(warmup, duration);
    for (i = 0; i < nconns; i++)
        free(conns[i].rest);
    free(pub.rest);
    free(pattern);
    free(payload);
    free(conns);
    return rc;
}
