/*
 * loadgen: the C load generator of bench/run.py, bench/echo.py and bench/bots.py.
 *
 * Single-threaded, non-blocking, level-triggered epoll, so that it is never
 * what limits a Python server. Four modes (--mode):
 *
 * echo (default): closed-loop echo load. Each of `connections` connections
 *   keeps `pipeline` messages of `size` bytes in flight: it sends `pipeline`
 *   messages, and every time one whole message's worth of echoed bytes has
 *   come back it sends one more. Every message ends with '\n' and contains no
 *   other '\n', so a line-framed echo server works unchanged. The echoed
 *   stream is compared with what was sent; a mismatch counts as an error.
 *   Latency: each message is stamped (CLOCK_MONOTONIC, once per loop turn)
 *   when it is queued and again when its last byte comes back; the
 *   differences go into a log-linear histogram (1.6 % buckets) whose
 *   percentiles are printed (lat_p50_us ... lat_max_us).
 *
 * fanout: one publisher and `connections` subscribers, against a server that
 *   sends every byte one connection sends to all the others. The
 *   subscribers connect first; then the publisher sends single messages every
 *   20 ms until every subscriber has received one (so each is known to be
 *   registered with the server), waits 200 ms, and from then on keeps at
 *   most `pipeline` messages ahead of the slowest subscriber. msgs counts
 *   messages delivered to subscribers (one publication = `connections`
 *   deliveries); latency is from a publication to each delivery.
 *
 * idle: opens `connections` connections, at most --concurrency connects at a
 *   time, spread over --sources source addresses 127.0.0.1, 127.0.0.2, ...
 *   (so that more connections than one address's ephemeral ports can be
 *   held). Each sends one message and waits for its echo (so the server has
 *   really taken it), then stays idle. When all are idle (or failed) it
 *   prints {"event": "ready", ...} on stdout and holds them until its stdin
 *   reaches end of file or --hold seconds pass; then it closes them and
 *   prints the result line.
 *
 * churn: --cycles connect / send one message / read its echo / close
 *   cycles, `connections` of them at a time, from --sources source
 *   addresses; prints cycles per second.
 *
 * Every mode ends by printing one JSON line on stdout. Over the measured
 * window: cpu_seconds (cpu_user, cpu_sys) is this process's own CPU time
 * (getrusage); wait_seconds is the time spent in epoll_wait(), so
 * 1 - wait_seconds/seconds is how busy the generator was (near 1: it may be
 * the bottleneck); runq_wait_seconds is the time it was runnable but another
 * task had its CPU (noise); reads, sends and waits count the syscalls. Where
 * the kernel accounts IRQ time apart (as /proc/stat's softirq column shows),
 * the softirq time in which loopback TCP does much of its work is not in
 * cpu_*.
 *
 * --spin-us U polls without blocking for U microseconds after the last event
 * before sleeping in epoll_wait (default 0). On a quiet machine it spares the
 * server the cost of waking the generator; on a shared one it steals CPU from
 * whatever else runs on the generator's core.
 *
 * Rules it keeps: never more than `pipeline` messages in flight per connection
 * (so every buffer is bounded by pipeline*size); one read() and at most one
 * send() per ready connection per loop turn; every loop has a deadline and
 * an alarm() kills it if something hangs. Exit status: 0 on a completed run,
 * 1 on bad arguments, 2 if a connection could not be made (echo, fanout) or
 * the fanout subscribers could not be synchronised.
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* One read takes up to this much; a connection never has more than
 * pipeline*size bytes in flight, so one read normally drains it. */
#define READ_BUF_SIZE (256 * 1024)
#define MAX_EVENTS 1024
#define EPOLL_TIMEOUT_MS 50
#define CONNECT_TIMEOUT_S 5
/* Extra seconds past the run's own length before SIGALRM kills a hung run. */
#define ALARM_SLACK_S 30
/* fanout: seconds the subscribers may take to be seen by the server. */
#define SYNC_TIMEOUT_S 10.0
#define SYNC_EVERY_S 0.02
#define SYNC_SETTLE_S 0.2
/* idle, churn: seconds to wait for the connections to be made and echo. */
#define SETUP_TIMEOUT_S 120.0
/* Latency histogram: 64 linear sub-buckets per power of two of nanoseconds. */
#define HSUB 64
#define HBUCKETS (HSUB * 40)

enum { MODE_ECHO, MODE_FANOUT, MODE_IDLE, MODE_CHURN };
enum { ST_CLOSED, ST_CONNECTING, ST_WAITING, ST_IDLE, ST_OPEN };

struct conn {
    int fd;
    int open;
    int state;          /* idle and churn modes */
    int want_out;       /* EPOLLOUT armed */
    uint64_t sent;      /* bytes sent so far (stream offset of the next send) */
    uint64_t recvd;     /* bytes received so far */
    uint64_t to_send;   /* bytes queued but not yet sent */
    uint64_t queued;    /* messages queued so far (echo: index into the stamp ring) */
    uint64_t done;      /* messages completed so far */
    uint64_t missed;    /* fanout: publications sent before the server registered it */
};

static struct conn *conns;
static struct conn pub; /* fanout: the publisher */
static uint64_t *stamps; /* echo: `pipeline` queue stamps per connection */
static uint64_t *pub_stamps; /* fanout: stamps of the last `ring` publications */
static uint64_t ring;
static int nconns = 100;
static int mode = MODE_ECHO;
static int epfd = -1;
static long msg_size = 64;
static long pipeline = 1;
static long nsources;
static long concurrency = 256;
static long cycles = 100000;
static unsigned char *pattern; /* messages back to back, READ_BUF_SIZE + more */
static unsigned char readbuf[READ_BUF_SIZE];
static uint64_t errors;
static int open_conns;
static int stopping;
static int measuring;
static struct sockaddr_in target;
static uint64_t hist[HBUCKETS], hist_n, hist_max;
/* Syscall counts over the measured window, to show how much each one carries. */
static uint64_t n_reads, n_sends, n_waits;
static double spin_s; /* --spin-us: poll without blocking this long before sleeping */
static int stdin_marker; /* its address tags stdin in the epoll set */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double now_s(void) { return (double)now_ns() / 1e9; }

/* Seconds this process was runnable but waiting for its CPU (another task or
 * an interrupt had it), from /proc/self/schedstat; 0 if the kernel lacks it. */
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

/* This process's (user, system) CPU seconds. */
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
        int e = 63 - __builtin_clzll(v); /* >= 6 */
        idx = (unsigned)((e - 5) * HSUB + (int)((v >> (e - 6)) & (HSUB - 1)));
    }
    if (idx >= HBUCKETS)
        idx = HBUCKETS - 1;
    hist[idx]++;
    hist_n++;
    if (v > hist_max)
        hist_max = v;
}

/* The middle of the histogram bucket holding quantile q, in microseconds. */
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
            "usage: loadgen --port P [--host H] [--mode echo|fanout|idle|churn]\n"
            "               [--connections N] [--size BYTES] [--pipeline D]\n"
            "               [--duration S] [--warmup S] [--spin-us U]\n"
            "               [--sources K] [--concurrency C] [--cycles N] [--hold S]\n"
            "echo: N connections, D messages of BYTES (ending in '\\n') in flight each;\n"
            "fanout: 1 publisher D messages ahead of N subscribers; idle: hold N\n"
            "connections from K source addresses; churn: N cycles of connect/echo/close.\n"
            "Prints one JSON line (idle: a ready line first).\n");
}

static void conn_error(struct conn *c, const char *what, int err)
{
    static int reported;
    errors++;
    if (!reported && !stopping) {
        fprintf(stderr, "loadgen: connection %ld: %s%s%s\n",
                c == &pub ? -1L : (long)(c - conns), what, err ? ": " : "",
                err ? strerror(err) : "");
        reported = 1;
    }
    if (c->open) {
        close(c->fd); /* close() also removes it from the epoll set */
        c->open = 0;
        c->state = ST_CLOSED;
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

/* Send what is queued: one send() unless it is interrupted. */
static void flush(struct conn *c)
{
    while (c->open && c->to_send > 0) {
        size_t off = (size_t)(c->sent % (uint64_t)msg_size);
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
        if ((size_t)n < len) { /* short write: the socket buffer is full */
            set_out(c, 1);
            return;
        }
    }
    if (c->open && c->want_out)
        set_out(c, 0);
}

/* Read once and check the bytes against the pattern; return the number of
 * messages this read completed. `check_sent`: the peer echoes (it cannot send
 * more than was sent to it). */
static uint64_t on_readable(struct conn *c, int check_sent)
{
    ssize_t n;
    uint64_t done;
    size_t off;

    do {
        n = read(c->fd, readbuf, sizeof readbuf);
        n_reads++;
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        conn_error(c, "read", errno);
        return 0;
    }
    if (n == 0) {
        conn_error(c, "server closed the connection", 0);
        return 0;
    }
    if (check_sent && c->recvd + (uint64_t)n > c->sent) {
        conn_error(c, "server echoed more bytes than were sent", 0);
        return 0;
    }
    /* off < size and n <= READ_BUF_SIZE: inside `pattern`. */
    off = (size_t)(c->recvd % (uint64_t)msg_size);
    if (memcmp(readbuf, pattern + off, (size_t)n) != 0) {
        conn_error(c, "received bytes differ from the bytes sent", 0);
        return 0;
    }
    done = (c->recvd + (uint64_t)n) / (uint64_t)msg_size - c->recvd / (uint64_t)msg_size;
    c->recvd += (uint64_t)n;
    return done;
}

/* Blocking connect (bounded by SO_SNDTIMEO), then non-blocking; exits 2 on failure. */
static int connect_blocking(const struct addrinfo *ai, const char *host, const char *port, int i)
{
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    int one = 1;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        fprintf(stderr, "loadgen: socket() for connection %d/%d: %s\n", i + 1, nconns,
                strerror(errno));
        exit(2);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds connect() */
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        fprintf(stderr, "loadgen: connect to %s:%s failed (connection %d/%d): %s\n", host, port,
                i + 1, nconns, strerror(errno));
        exit(2);
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        fprintf(stderr, "loadgen: fcntl: %s\n", strerror(errno));
        exit(2);
    }
    return fd;
}

static int add_fd(struct conn *c, unsigned events)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = c;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Non-blocking connect of `c` from source address number `k` (idle, churn).
 * Returns 0 when the connect is under way, -1 (counted as an error) if not. */
static int start_connect(struct conn *c, long k)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    if (fd < 0) {
        errors++;
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (nsources > 0) {
        struct sockaddr_in src;
        memset(&src, 0, sizeof src);
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(k % nsources));
        /* The port is picked at connect() time, per destination. */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            close(fd);
            errors++;
            return -1;
        }
    }
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        close(fd);
        errors++;
        return -1;
    }
    c->fd = fd;
    c->open = 1;
    c->state = ST_CONNECTING;
    c->want_out = 1;
    open_conns++;
    if (add_fd(c, EPOLLIN | EPOLLOUT) < 0) {
        conn_error(c, "epoll_ctl", errno);
        return -1;
    }
    return 0;
}

/* idle, churn: a connect finished (EPOLLOUT) or failed; send the message. */
static void on_connected(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        conn_error(c, "connect", err);
        return;
    }
    c->state = ST_WAITING;
    c->to_send = (uint64_t)msg_size;
    flush(c);
}

static long parse_long(const char *s, const char *name, long lo, long hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        fprintf(stderr, "loadgen: --%s must be an integer in [%ld, %ld], not %s\n", name, lo, hi, s);
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
        fprintf(stderr, "loadgen: --%s must be a number in [%g, %g], not %s\n", name, lo, hi, s);
        exit(1);
    }
    return v;
}

/* The measured window's figures, shared by every mode's result line. */
struct window {
    double t0, t1, user0, sys0, user1, sys1, runq0, runq1, wait_s;
    uint64_t reads0, sends0, waits0;
};

static void window_open(struct window *w, double t)
{
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
}

static void print_common(const struct window *w)
{
    printf("\"seconds\": %.6f, \"errors\": %llu, \"cpu_seconds\": %.6f, \"cpu_user\": %.6f, "
           "\"cpu_sys\": %.6f, \"wait_seconds\": %.6f, \"runq_wait_seconds\": %.6f, "
           "\"reads\": %llu, \"sends\": %llu, \"waits\": %llu, \"connections\": %d, "
           "\"open_at_end\": %d, \"size\": %ld, \"pipeline\": %ld, "
           "\"lat_samples\": %llu, \"lat_p50_us\": %.3f, \"lat_p90_us\": %.3f, "
           "\"lat_p99_us\": %.3f, \"lat_p999_us\": %.3f, \"lat_max_us\": %.3f}\n",
           w->t1 - w->t0, (unsigned long long)errors,
           (w->user1 - w->user0) + (w->sys1 - w->sys0), w->user1 - w->user0,
           w->sys1 - w->sys0, w->wait_s, w->runq1 - w->runq0,
           (unsigned long long)(n_reads - w->reads0), (unsigned long long)(n_sends - w->sends0),
           (unsigned long long)(n_waits - w->waits0), nconns, open_conns, msg_size, pipeline,
           (unsigned long long)hist_n, hist_quantile_us(0.50), hist_quantile_us(0.90),
           hist_quantile_us(0.99), hist_quantile_us(0.999), (double)hist_max / 1e3);
    fflush(stdout);
}

static int wait_events(struct epoll_event *events, double *last_event, struct window *w)
{
    double tw = now_s();
    int n = epoll_wait(epfd, events, MAX_EVENTS, tw - *last_event < spin_s ? 0 : EPOLL_TIMEOUT_MS);
    double t = now_s();
    n_waits++;
    if (n > 0)
        *last_event = t;
    if (measuring)
        w->wait_s += t - tw;
    if (n < 0) {
        if (errno != EINTR)
            fprintf(stderr, "loadgen: epoll_wait: %s\n", strerror(errno));
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

/* echo: queue k more messages on c, stamped t. */
static void queue_msgs(struct conn *c, uint64_t k, uint64_t t)
{
    uint64_t *ring_c = stamps + (size_t)(c - conns) * (size_t)pipeline;
    uint64_t j;
    for (j = 0; j < k; j++) {
        ring_c[c->queued % (uint64_t)pipeline] = t;
        c->queued++;
    }
    c->to_send += k * (uint64_t)msg_size;
}

static int run_echo(double warmup, double duration)
{
    struct epoll_event *events = calloc(MAX_EVENTS, sizeof *events);
    struct window w;
    uint64_t msgs = 0, msgs_total = 0;
    double t_start, t_warm_end, t_end, last_event;
    int i;

    memset(&w, 0, sizeof w);
    stamps = calloc((size_t)nconns * (size_t)pipeline, sizeof *stamps);
    if (!events || !stamps) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    /* The clock starts once every connection is up. */
    t_start = now_s();
    t_warm_end = t_start + warmup;
    t_end = t_warm_end + duration;
    {
        uint64_t t = now_ns();
        for (i = 0; i < nconns; i++) {
            queue_msgs(&conns[i], (uint64_t)pipeline, t);
            flush(&conns[i]);
        }
    }
    last_event = now_s();
    while (open_conns > 0) {
        int n = wait_events(events, &last_event, &w);
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
                done = on_readable(c, 1);
            if (!c->open)
                continue;
            if (done) {
                uint64_t *ring_c = stamps + (size_t)(c - conns) * (size_t)pipeline;
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
    if (!measuring) /* every connection died during warm-up */
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

/* fanout: the smallest publication count a live subscriber has reached. */
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
    pub.to_send += k * (uint64_t)msg_size;
    flush(&pub);
}

/* fanout: one event on the publisher or a subscriber. `sync`: no latency. */
static uint64_t fanout_event(struct epoll_event *ev, uint64_t tn, int sync)
{
    struct conn *c = ev->data.ptr;
    uint64_t done = 0, j;
    if (!c->open)
        return 0;
    if (c == &pub) {
        if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            ssize_t n = read(pub.fd, readbuf, sizeof readbuf); /* the server sent it back: drop */
            n_reads++;
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                conn_error(&pub, n == 0 ? "server closed the publisher" : "read", n ? errno : 0);
        }
        if (pub.open)
            flush(&pub);
        return 0;
    }
    if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        done = on_readable(c, 0);
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
    double t_sync_end, t_next, t_start, t_warm_end, t_end, last_event, t_synced = 0.0;
    int i, synced = 0, dirty = 0;

    memset(&w, 0, sizeof w);
    ring = (uint64_t)pipeline + 2;
    pub_stamps = calloc((size_t)ring, sizeof *pub_stamps);
    if (!events || !pub_stamps) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    /* Sync: single messages until every subscriber has one, then settle. */
    last_event = now_s();
    t_sync_end = last_event + SYNC_TIMEOUT_S;
    t_next = last_event;
    for (;;) {
        double t = now_s();
        int n, waiting = 0;
        if (t >= t_sync_end) {
            for (i = 0; i < nconns; i++)
                waiting += conns[i].open && conns[i].done == 0;
            fprintf(stderr, "loadgen: %d of %d subscribers got nothing in %.0f s\n", waiting,
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
        n = wait_events(events, &last_event, &w);
        if (n < 0)
            return 1;
        for (i = 0; i < n; i++)
            fanout_event(&events[i], 0, 1);
        if (!pub.open || open_conns <= 1) {
            fprintf(stderr, "loadgen: connections lost while synchronising\n");
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
    /* Closed loop: the publisher stays at most `pipeline` messages ahead. */
    lo = slowest(published);
    t_start = now_s();
    t_warm_end = t_start + warmup;
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
        n = wait_events(events, &last_event, &w);
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
           "\"published\": %llu, \"subscribers\": %d, ",
           (unsigned long long)msgs, (unsigned long long)msgs_total,
           w.t1 - w.t0 > 0 ? (double)msgs / (w.t1 - w.t0) : 0.0,
           (unsigned long long)(published - published0), nconns);
    print_common(&w);
    free(events);
    free(pub_stamps);
    return 0;
}

/* idle, churn: handle one event of a connection being set up; return 1 once
 * its message has come back. */
static int setup_event(struct epoll_event *ev)
{
    struct conn *c = ev->data.ptr;
    if (!c->open)
        return 0;
    if (c->state == ST_CONNECTING) {
        if (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            on_connected(c);
        return 0;
    }
    if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        uint64_t done = on_readable(c, 1);
        if (!c->open)
            return 0;
        if (c->state == ST_WAITING && done > 0) {
            c->state = ST_IDLE;
            return 1;
        }
        if (c->state == ST_IDLE) /* an idle connection got something: not an echo */
            return 0;
    }
    if (c->open && (ev->events & EPOLLOUT))
        flush(c);
    return 0;
}

static int run_idle(double hold)
{
    struct epoll_event *events = calloc(MAX_EVENTS, sizeof *events);
    struct window w;
    long started = 0, idle = 0, failed0;
    double t0 = now_s(), t_ready, deadline = t0 + SETUP_TIMEOUT_S, last_event = t0;
    int held_to_eof = 0;

    memset(&w, 0, sizeof w);
    if (!events) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    window_open(&w, t0);
    measuring = 1;
    while (idle + (long)errors < nconns && now_s() < deadline) {
        int i, n;
        while (started < nconns && started - idle - (long)errors < concurrency) {
            start_connect(&conns[started], started);
            started++;
        }
        n = wait_events(events, &last_event, &w);
        if (n < 0)
            break;
        for (i = 0; i < n; i++)
            idle += setup_event(&events[i]);
    }
    t_ready = now_s();
    failed0 = (long)errors;
    printf("{\"event\": \"ready\", \"idle\": %ld, \"failed\": %ld, \"seconds\": %.3f}\n", idle,
           failed0, t_ready - t0);
    fflush(stdout);
    /* Hold until stdin ends (the driver is done measuring) or `hold` passes. */
    {
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.ptr = &stdin_marker;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) < 0)
            fprintf(stderr, "loadgen: stdin is not pollable; holding %.0f s\n", hold);
    }
    deadline = now_s() + hold;
    while (now_s() < deadline && !held_to_eof) {
        int i, n = wait_events(events, &last_event, &w);
        if (n < 0)
            break;
        for (i = 0; i < n; i++) {
            if (events[i].data.ptr == &stdin_marker) {
                char buf[256];
                ssize_t r = read(0, buf, sizeof buf);
                if (r <= 0 && !(r < 0 && errno == EINTR))
                    held_to_eof = 1;
                continue;
            }
            setup_event(&events[i]);
        }
    }
    window_close(&w);
    printf("{\"mode\": \"idle\", \"idle\": %ld, \"held\": %d, \"failed\": %ld, "
           "\"connect_seconds\": %.3f, \"connects_per_s\": %.1f, \"held_to_eof\": %d, ",
           idle, open_conns, failed0, t_ready - t0,
           t_ready > t0 ? (double)idle / (t_ready - t0) : 0.0, held_to_eof);
    close_all();
    print_common(&w);
    free(events);
    return 0;
}

static int run_churn(double duration)
{
    struct epoll_event *events = calloc(MAX_EVENTS, sizeof *events);
    struct window w;
    long started = 0, finished = 0, k;
    double t0 = now_s(), deadline = t0 + duration, last_event = t0;

    memset(&w, 0, sizeof w);
    if (!events) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    window_open(&w, t0);
    measuring = 1;
    for (k = 0; k < nconns && started < cycles; k++)
        start_connect(&conns[k], started++);
    while (finished < cycles && now_s() < deadline) {
        int i, n = wait_events(events, &last_event, &w);
        if (n < 0)
            break;
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c->open)
                continue;
            if (setup_event(&events[i])) {
                close(c->fd); /* a whole cycle: close, count, start the next */
                c->open = 0;
                c->state = ST_CLOSED;
                open_conns--;
                finished++;
            }
            if (!c->open && started < cycles)
                start_connect(c, started++);
        }
        /* Replace slots whose connect could not even start. */
        for (k = 0; k < nconns && started < cycles && open_conns < nconns; k++)
            if (!conns[k].open)
                start_connect(&conns[k], started++);
        if (open_conns == 0 && started >= cycles)
            break;
    }
    window_close(&w);
    close_all();
    printf("{\"mode\": \"churn\", \"cycles\": %ld, \"started\": %ld, \"cycles_per_s\": %.1f, ",
           finished, started, w.t1 > w.t0 ? (double)finished / (w.t1 - w.t0) : 0.0);
    print_common(&w);
    free(events);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, 0, 'h'},   {"port", required_argument, 0, 'p'},
        {"connections", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
        {"pipeline", required_argument, 0, 'd'}, {"duration", required_argument, 0, 't'},
        {"warmup", required_argument, 0, 'w'}, {"spin-us", required_argument, 0, 'u'},
        {"mode", required_argument, 0, 'm'},   {"sources", required_argument, 0, 'S'},
        {"concurrency", required_argument, 0, 'C'}, {"cycles", required_argument, 0, 'n'},
        {"hold", required_argument, 0, 'H'},   {"help", no_argument, 0, '?'},
        {0, 0, 0, 0},
    };
    const char *host = "127.0.0.1";
    const char *port = NULL;
    double duration = 5.0, warmup = 1.0, hold = 60.0;
    struct addrinfo hints, *ai = NULL;
    size_t pattern_len;
    struct rlimit rl;
    int opt, i, rc;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = optarg; parse_long(optarg, "port", 1, 65535); break;
        case 'c': nconns = (int)parse_long(optarg, "connections", 1, 1000000); break;
        case 's': msg_size = parse_long(optarg, "size", 2, 1 << 20); break;
        case 'd': pipeline = parse_long(optarg, "pipeline", 1, 4096); break;
        case 't': duration = parse_double(optarg, "duration", 0.01, 3600); break;
        case 'w': warmup = parse_double(optarg, "warmup", 0, 3600); break;
        case 'u': spin_s = parse_double(optarg, "spin-us", 0, 1e6) / 1e6; break;
        case 'S': nsources = parse_long(optarg, "sources", 0, 250); break;
        case 'C': concurrency = parse_long(optarg, "concurrency", 1, 100000); break;
        case 'n': cycles = parse_long(optarg, "cycles", 1, 100000000); break;
        case 'H': hold = parse_double(optarg, "hold", 0, 3600); break;
        case 'm':
            if (strcmp(optarg, "echo") == 0)
                mode = MODE_ECHO;
            else if (strcmp(optarg, "fanout") == 0)
                mode = MODE_FANOUT;
            else if (strcmp(optarg, "idle") == 0)
                mode = MODE_IDLE;
            else if (strcmp(optarg, "churn") == 0)
                mode = MODE_CHURN;
            else {
                fprintf(stderr, "loadgen: --mode must be echo, fanout, idle or churn\n");
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
    /* Idle mode holds thousands of sockets: take the whole open-file limit. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    switch (mode) {
    case MODE_IDLE: alarm((unsigned)(SETUP_TIMEOUT_S + hold) + ALARM_SLACK_S); break;
    case MODE_CHURN: alarm((unsigned)duration + ALARM_SLACK_S); break;
    default: alarm((unsigned)(SYNC_TIMEOUT_S + warmup + duration) + ALARM_SLACK_S); break;
    }

    /* The message: printable bytes, no '\n' but the last one. Long enough for
     * a whole read at any offset, and for `pipeline` messages queued at once. */
    pattern_len = (size_t)msg_size * (size_t)(pipeline + 1) + READ_BUF_SIZE + (size_t)msg_size;
    pattern = malloc(pattern_len);
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!pattern || !conns) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    for (size_t k = 0; k < pattern_len; k++)
        pattern[k] = (k % (size_t)msg_size == (size_t)msg_size - 1)
                         ? '\n'
                         : (unsigned char)('a' + (k % (size_t)msg_size) % 26);

    memset(&hints, 0, sizeof hints);
    hints.ai_family = (mode == MODE_IDLE || mode == MODE_CHURN) ? AF_INET : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "loadgen: cannot resolve %s:%s: %s\n", host, port, gai_strerror(rc));
        return 2;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        fprintf(stderr, "loadgen: epoll_create1: %s\n", strerror(errno));
        return 1;
    }
    if (mode == MODE_IDLE || mode == MODE_CHURN) {
        memcpy(&target, ai->ai_addr, sizeof target);
        freeaddrinfo(ai);
        return mode == MODE_IDLE ? run_idle(hold) : run_churn(duration);
    }
    for (i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->fd = connect_blocking(ai, host, port, i);
        c->open = 1;
        c->state = ST_OPEN;
        open_conns++;
        if (add_fd(c, EPOLLIN) < 0) {
            fprintf(stderr, "loadgen: epoll_ctl: %s\n", strerror(errno));
            return 1;
        }
    }
    if (mode == MODE_FANOUT) {
        pub.fd = connect_blocking(ai, host, port, nconns);
        pub.open = 1;
        pub.state = ST_OPEN;
        open_conns++;
        if (add_fd(&pub, EPOLLIN) < 0) {
            fprintf(stderr, "loadgen: epoll_ctl: %s\n", strerror(errno));
            return 1;
        }
    }
    freeaddrinfo(ai);
    rc = mode == MODE_FANOUT ? run_fanout(warmup, duration) : run_echo(warmup, duration);
    free(pattern);
    free(conns);
    return rc;
}
