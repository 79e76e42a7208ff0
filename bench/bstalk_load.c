/*
 * bstalk_load: the beanstalkd-protocol load generator of bench/jobqueue.py.
 *
 * Single-threaded, non-blocking, level-triggered epoll, like loadgen.c, so
 * that one core of C drives a server through the same commands a beanstalkd
 * client sends. Every job body is `size` bytes of a fixed pattern; every put
 * is "put 1024 0 60 <size>" (priority 1024, no delay, a TTR of 60 s, far past
 * any run). Three modes (--mode):
 *
 * cycle (default): each of `connections` connections loops put -> reserve ->
 *   delete <the id reserved>, one command in flight per connection (closed
 *   loop). All connections share one tube, so a reserve may return a job
 *   another connection put; each connection puts before it reserves, so a
 *   reserve never waits for long.
 *
 * mix: the first half of the connections are producers (put, put, ...), the
 *   others consumers (reserve, delete, reserve, ...), one command in flight
 *   each, on one tube. A producer pauses while the jobs inserted and not yet
 *   reserved number --backlog or more, and resumes when a consumer reserves
 *   one: the run measures a steady state, not a queue growing for as long
 *   as the run lasts.
 *
 * fill: `connections` connections put --count jobs in all as fast as they
 *   can, `pipeline` puts in flight each, and exit once every one is
 *   INSERTED; the jobs stay ready in the server (bench/jobqueue.py measures
 *   the server's memory before and after). --duration is then a deadline.
 *
 * An "op" is one command and its whole reply. Every reply is checked: put
 * must get "INSERTED <id>", reserve "RESERVED <id> <size>" and the body
 * byte for byte then CRLF, delete "DELETED", and the tube commands their
 * USING / WATCHING answers. Anything else counts as an error: the first
 * few are printed on stderr with the reply, and the connection is closed.
 * Latency is from a command being queued (CLOCK_MONOTONIC, once per loop
 * turn) to its reply being parsed, in a log-linear histogram (1.6 %
 * buckets), for all ops together and for put, reserve and delete apart.
 *
 * Bounds: the run stops after --warmup + --duration seconds, or once --count
 * jobs are done (cycle, mix: deleted; fill: inserted), whichever comes first;
 * an alarm() kills a hung run. Output: one JSON line on stdout. Over the
 * measured window (after the warm-up; fill: the whole fill): ops, jobs,
 * their rates, errors, this process's CPU time (getrusage), the time spent
 * in epoll_wait() (1 - wait_seconds/seconds is how busy the generator was;
 * near 1 it may be the limit), its run-queue wait, syscall counts, and the
 * latency percentiles. Exit status: 0 on a completed run (errors are in the
 * JSON), 1 on bad arguments, 2 if a connection or its tube setup failed.
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -o bstalk_load bstalk_load.c
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

/* Longest reply line accepted ("RESERVED <id> <bytes>" is under 50 bytes;
 * beanstalkd's own line limit is 224). */
#define MAX_LINE 256
/* One read takes up to this much on top of what a connection keeps. */
#define READ_CHUNK (64 * 1024)
#define MAX_EVENTS 1024
#define EPOLL_TIMEOUT_MS 50
#define CONNECT_TIMEOUT_S 5
/* Seconds the connections get to make their tube setup (use/watch/ignore). */
#define SETUP_TIMEOUT_S 30.0
/* Extra seconds past the run's own length before SIGALRM kills a hung run. */
#define ALARM_SLACK_S 30
/* Errors printed on stderr in full; the rest are only counted. */
#define ERRORS_SHOWN 5
/* beanstalkd's max-job-size default: no body may be longer. */
#define MAX_SIZE 65535
/* Latency histogram: 64 linear sub-buckets per power of two of nanoseconds. */
#define HSUB 64
#define HBUCKETS (HSUB * 40)

enum { MODE_CYCLE, MODE_MIX, MODE_FILL };
enum { ROLE_CYCLER, ROLE_PRODUCER, ROLE_CONSUMER, ROLE_FILLER };
enum { OP_NONE, OP_USE, OP_WATCH, OP_IGNORE, OP_PUT, OP_RESERVE, OP_DELETE };
enum { H_ALL, H_PUT, H_RESERVE, H_DELETE, NHIST };

struct hist {
    uint64_t b[HBUCKETS], n, max;
};

struct conn {
    int fd;
    int open;
    int want_out;    /* EPOLLOUT armed */
    int role;
    int setup_left;  /* tube setup replies still expected */
    int op;          /* the command whose reply comes next (one in flight) */
    int inflight;    /* commands sent whose reply has not come */
    int parked;      /* mix producer waiting for the backlog to fall */
    uint64_t job;    /* the id reserved, to delete */
    uint64_t t_sent; /* when the command in flight was queued (ns) */
    unsigned char *out;
    size_t out_len, out_off, out_cap;
    unsigned char *in;
    size_t in_len, in_cap;
};

static struct conn *conns;
static int nconns = 100;
static int mode = MODE_CYCLE;
static int epfd = -1;
static long body_size = 100;
static long pipeline = 1;
static long backlog = 1000;
static uint64_t count; /* 0: no bound */
static const char *tube = "default";
static unsigned char *body;
static char put_head[64];
static size_t put_head_len;
static uint64_t errors;
static int open_conns;
static int stopping;
static int measuring;
/* Totals since the start (jobs bound the run; backlog steers the producers). */
static uint64_t inserted, reserved, jobs_done, queued_puts;
/* Over the measured window. */
static uint64_t w_ops, w_jobs, w_puts, w_reserves, w_deletes;
static struct hist hists[NHIST];
static uint64_t n_reads, n_sends, n_waits;
static int *parked; /* mix: producers waiting, a stack of indices */
static int nparked;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double now_s(void) { return (double)now_ns() / 1e9; }

/* Seconds this process was runnable but waiting for its CPU, from
 * /proc/self/schedstat; 0 if the kernel lacks it. */
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

static void hist_add(struct hist *h, uint64_t v)
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
    h->b[idx]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

/* The middle of the histogram bucket holding quantile q, in microseconds. */
static double hist_quantile_us(const struct hist *h, double q)
{
    uint64_t want, seen = 0;
    unsigned i;
    if (h->n == 0)
        return 0.0;
    want = (uint64_t)(q * (double)h->n);
    if (want >= h->n)
        want = h->n - 1;
    for (i = 0; i < HBUCKETS; i++) {
        seen += h->b[i];
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
            "usage: bstalk_load --port P [--host H] [--mode cycle|mix|fill]\n"
            "                   [--connections N] [--size BYTES] [--pipeline D]\n"
            "                   [--duration S] [--warmup S] [--count JOBS]\n"
            "                   [--backlog JOBS] [--tube NAME]\n"
            "cycle: N connections loop put/reserve/delete; mix: N/2 producers, N/2\n"
            "consumers; fill: put JOBS jobs, D in flight per connection, and exit.\n"
            "Prints one JSON line.\n");
}

static const char *op_name(int op)
{
    switch (op) {
    case OP_USE: return "use";
    case OP_WATCH: return "watch";
    case OP_IGNORE: return "ignore";
    case OP_PUT: return "put";
    case OP_RESERVE: return "reserve";
    case OP_DELETE: return "delete";
    default: return "nothing";
    }
}

static void close_conn(struct conn *c)
{
    if (c->open) {
        close(c->fd); /* close() also removes it from the epoll set */
        c->open = 0;
        open_conns--;
    }
}

/* An error on c: count it, show the first few, close the connection. */
static void conn_error(struct conn *c, const char *what, const char *detail)
{
    errors++;
    if (errors <= ERRORS_SHOWN && !stopping)
        fprintf(stderr, "bstalk_load: connection %ld (after %s): %s%s%s%s\n",
                (long)(c - conns), op_name(c->op), what, detail ? " '" : "",
                detail ? detail : "", detail ? "'" : "");
    else if (errors == ERRORS_SHOWN + 1 && !stopping)
        fprintf(stderr, "bstalk_load: more errors; only counting them now\n");
    close_conn(c);
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
        conn_error(c, "epoll_ctl: ", strerror(errno));
        return;
    }
    c->want_out = on;
}

/* Append bytes to c's output; the buffer is sized for `pipeline` puts. */
static void out_add(struct conn *c, const void *data, size_t len)
{
    if (c->out_off > 0 && c->out_len + len > c->out_cap) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + len > c->out_cap) { /* cannot happen with inflight <= pipeline */
        conn_error(c, "output buffer overflow", NULL);
        return;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

/* Send what is queued, until it is all sent or the socket is full. */
static void flush(struct conn *c)
{
    while (c->open && c->out_off < c->out_len) {
        size_t len = c->out_len - c->out_off;
        ssize_t n = send(c->fd, c->out + c->out_off, len, MSG_NOSIGNAL);
        n_sends++;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_out(c, 1);
                return;
            }
            conn_error(c, "send: ", strerror(errno));
            return;
        }
        c->out_off += (size_t)n;
    }
    if (!c->open)
        return;
    c->out_off = c->out_len = 0;
    if (c->want_out)
        set_out(c, 0);
}

static void send_put(struct conn *c, uint64_t t)
{
    out_add(c, put_head, put_head_len);
    out_add(c, body, (size_t)body_size);
    out_add(c, "\r\n", 2);
    c->op = OP_PUT;
    c->inflight++;
    c->t_sent = t;
    queued_puts++;
}

static void send_reserve(struct conn *c, uint64_t t)
{
    out_add(c, "reserve\r\n", 9);
    c->op = OP_RESERVE;
    c->inflight++;
    c->t_sent = t;
}

static void send_delete(struct conn *c, uint64_t t)
{
    char line[48];
    int n = snprintf(line, sizeof line, "delete %llu\r\n", (unsigned long long)c->job);
    out_add(c, line, (size_t)n);
    c->op = OP_DELETE;
    c->inflight++;
    c->t_sent = t;
}

/* Parse "<word> <n>" or "<word> <n> <m>" exactly; return the numbers read. */
static int parse_reply(const char *line, const char *word, unsigned long long *a,
                       unsigned long long *b)
{
    size_t wl = strlen(word);
    const char *p;
    char *end;
    if (strncmp(line, word, wl) != 0 || line[wl] != ' ')
        return 0;
    p = line + wl + 1;
    if (*p < '0' || *p > '9')
        return 0;
    *a = strtoull(p, &end, 10);
    if (*end == 0)
        return 1;
    if (b == NULL || *end != ' ' || end[1] < '0' || end[1] > '9')
        return 0;
    *b = strtoull(end + 1, &end, 10);
    return *end == 0 ? 2 : 0;
}

static int backlog_full(void) { return inserted - reserved >= (uint64_t)backlog; }

static void unpark(uint64_t t)
{
    while (nparked > 0 && !backlog_full() && !stopping) {
        struct conn *p = &conns[parked[--nparked]];
        p->parked = 0;
        if (p->open) {
            send_put(p, t);
            flush(p);
        }
    }
}

static void record(int h, uint64_t t, uint64_t sent)
{
    if (!measuring)
        return;
    hist_add(&hists[H_ALL], t - sent);
    hist_add(&hists[h], t - sent);
    w_ops++;
}

static int count_reached(void) { return count > 0 && jobs_done >= count; }

/* One whole reply line (NUL-terminated, CRLF stripped) for the command in
 * flight, and for RESERVED the bytes after it. Returns the bytes of the
 * reply consumed past the line (the body and its CRLF), -1 when more must
 * be read first, -2 after an error. */
static long on_reply(struct conn *c, const char *line, const unsigned char *rest, size_t avail,
                     uint64_t t)
{
    unsigned long long a = 0, b = 0;
    char want[MAX_LINE + 16];
    if (c->setup_left > 0) {
        if (c->op == OP_USE)
            snprintf(want, sizeof want, "USING %s", tube);
        else
            snprintf(want, sizeof want, "WATCHING %d", c->op == OP_WATCH ? 2 : 1);
        if (strcmp(line, want) != 0) {
            conn_error(c, "unexpected reply", line);
            return -2;
        }
        c->inflight--;
        c->setup_left--;
        c->op = c->op == OP_USE ? OP_WATCH : OP_IGNORE;
        if (c->setup_left == 0)
            c->op = OP_NONE;
        return 0;
    }
    switch (c->op) {
    case OP_PUT:
        if (parse_reply(line, "INSERTED", &a, NULL) != 1) {
            conn_error(c, "unexpected reply", line);
            return -2;
        }
        c->inflight--;
        inserted++;
        record(H_PUT, t, c->t_sent);
        if (measuring)
            w_puts++;
        if (mode == MODE_FILL) {
            jobs_done++;
            if (measuring)
                w_jobs++;
            if (queued_puts < count && !stopping)
                send_put(c, t);
        } else if (!stopping) {
            if (c->role == ROLE_CYCLER) {
                send_reserve(c, t);
            } else if (backlog_full()) {
                c->parked = 1;
                c->op = OP_NONE;
                parked[nparked++] = (int)(c - conns);
            } else {
                send_put(c, t);
            }
        }
        return 0;
    case OP_RESERVE:
        if (parse_reply(line, "RESERVED", &a, &b) != 2) {
            conn_error(c, "unexpected reply", line);
            return -2;
        }
        if (b != (unsigned long long)body_size) {
            conn_error(c, "job body of the wrong size", line);
            return -2;
        }
        if (avail < (size_t)body_size + 2)
            return -1;
        if (memcmp(rest, body, (size_t)body_size) != 0 || rest[body_size] != '\r' ||
            rest[body_size + 1] != '\n') {
            conn_error(c, "job body differs from the body put, or no CRLF after it", line);
            return -2;
        }
        c->inflight--;
        reserved++;
        c->job = a;
        record(H_RESERVE, t, c->t_sent);
        if (measuring)
            w_reserves++;
        if (!stopping)
            send_delete(c, t);
        if (mode == MODE_MIX)
            unpark(t);
        return body_size + 2;
    case OP_DELETE:
        if (strcmp(line, "DELETED") != 0) {
            conn_error(c, "unexpected reply", line);
            return -2;
        }
        c->inflight--;
        jobs_done++;
        record(H_DELETE, t, c->t_sent);
        if (measuring) {
            w_deletes++;
            w_jobs++;
        }
        if (!stopping && !count_reached()) {
            if (c->role == ROLE_CYCLER)
                send_put(c, t);
            else
                send_reserve(c, t);
        }
        return 0;
    default:
        conn_error(c, "a reply when no command was in flight", line);
        return -2;
    }
}

/* Read once and handle every whole reply in c's input. */
static void on_readable(struct conn *c, uint64_t t)
{
    ssize_t n;
    size_t pos = 0;
    if (c->in_len == c->in_cap) {
        conn_error(c, "reply longer than any expected", NULL);
        return;
    }
    do {
        n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        n_reads++;
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_error(c, "read: ", strerror(errno));
        return;
    }
    if (n == 0) {
        conn_error(c, "the server closed the connection", NULL);
        return;
    }
    c->in_len += (size_t)n;
    while (c->open && pos < c->in_len) {
        unsigned char *start = c->in + pos;
        unsigned char *cr = memmem(start, c->in_len - pos, "\r\n", 2);
        size_t line_len;
        long used;
        if (cr == NULL) {
            if (c->in_len - pos > MAX_LINE) {
                c->in[pos + 60] = 0;
                conn_error(c, "reply line too long", (char *)start);
            }
            break;
        }
        line_len = (size_t)(cr - start);
        if (c->inflight == 0) {
            *cr = 0;
            conn_error(c, "a reply when no command was in flight", (char *)start);
            return;
        }
        *cr = 0; /* the line as a C string; restored below if we must wait */
        used = on_reply(c, (char *)start, cr + 2, c->in_len - pos - line_len - 2, t);
        if (used == -2)
            return;
        if (used == -1) {
            *cr = '\r';
            break;
        }
        pos += line_len + 2 + (size_t)used;
    }
    if (!c->open)
        return;
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    flush(c);
}

static long parse_long(const char *s, const char *name, long lo, long hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        fprintf(stderr, "bstalk_load: --%s must be an integer in [%ld, %ld], not %s\n", name, lo,
                hi, s);
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
        fprintf(stderr, "bstalk_load: --%s must be a number in [%g, %g], not %s\n", name, lo, hi,
                s);
        exit(1);
    }
    return v;
}

/* Blocking connect (bounded by SO_SNDTIMEO), then non-blocking; exits 2 on failure. */
static void open_conn(struct conn *c, const struct addrinfo *ai, const char *host,
                      const char *port, int i)
{
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    struct epoll_event ev;
    int one = 1;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        fprintf(stderr, "bstalk_load: socket() for connection %d: %s\n", i + 1, strerror(errno));
        exit(2);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds connect() */
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        fprintf(stderr, "bstalk_load: connect to %s:%s failed (connection %d/%d): %s\n", host,
                port, i + 1, nconns, strerror(errno));
        exit(2);
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        fprintf(stderr, "bstalk_load: fcntl: %s\n", strerror(errno));
        exit(2);
    }
    c->fd = fd;
    c->open = 1;
    c->out_cap = (size_t)pipeline * (put_head_len + (size_t)body_size + 2) + 2 * MAX_LINE;
    c->in_cap = (size_t)body_size + 2 + MAX_LINE + READ_CHUNK;
    c->out = malloc(c->out_cap);
    c->in = malloc(c->in_cap);
    if (c->out == NULL || c->in == NULL) {
        fprintf(stderr, "bstalk_load: out of memory\n");
        exit(2);
    }
    open_conns++;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        fprintf(stderr, "bstalk_load: epoll_ctl: %s\n", strerror(errno));
        exit(2);
    }
}

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
    measuring = 1;
}

static void window_close(struct window *w)
{
    w->t1 = now_s();
    cpu_s(&w->user1, &w->sys1);
    w->runq1 = runq_wait_s();
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
            fprintf(stderr, "bstalk_load: epoll_wait: %s\n", strerror(errno));
        return errno == EINTR ? 0 : -1;
    }
    return n;
}

static void close_all(void)
{
    int i;
    stopping = 1;
    for (i = 0; i < nconns; i++)
        close_conn(&conns[i]);
}

/* Send the tube commands (when the tube is not "default") and wait for every
 * answer; exits 2 if one is wrong or missing after SETUP_TIMEOUT_S. */
static void setup_tubes(struct epoll_event *events, struct window *w)
{
    char cmd[3 * MAX_LINE];
    double deadline = now_s() + SETUP_TIMEOUT_S;
    int i, n, waiting = 1;
    if (strcmp(tube, "default") == 0)
        return;
    n = snprintf(cmd, sizeof cmd, "use %s\r\nwatch %s\r\nignore default\r\n", tube, tube);
    for (i = 0; i < nconns; i++) {
        out_add(&conns[i], cmd, (size_t)n);
        conns[i].op = OP_USE;
        conns[i].setup_left = 3;
        conns[i].inflight = 3;
        flush(&conns[i]);
    }
    while (waiting) {
        int k = wait_events(events, w);
        uint64_t t = now_ns();
        if (k < 0)
            exit(2);
        for (i = 0; i < k; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->open && (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                on_readable(c, t);
            if (c->open && (events[i].events & EPOLLOUT))
                flush(c);
        }
        if (errors || open_conns < nconns) {
            fprintf(stderr, "bstalk_load: the tube setup failed\n");
            close_all();
            exit(2);
        }
        waiting = 0;
        for (i = 0; i < nconns && !waiting; i++)
            waiting = conns[i].setup_left > 0;
        if (waiting && now_s() >= deadline) {
            fprintf(stderr, "bstalk_load: tube setup not answered after %.0f s\n",
                    SETUP_TIMEOUT_S);
            close_all();
            exit(2);
        }
    }
}

static void print_hist(const char *name, const struct hist *h)
{
    printf("\"lat_%sp50_us\": %.3f, \"lat_%sp99_us\": %.3f, ", name, hist_quantile_us(h, 0.50),
           name, hist_quantile_us(h, 0.99));
}

static void print_result(const struct window *w)
{
    static const char *names[] = {"cycle", "mix", "fill"};
    double secs = w->t1 - w->t0;
    int producers = 0, consumers = 0, i;
    for (i = 0; i < nconns; i++) {
        producers += conns[i].role == ROLE_PRODUCER;
        consumers += conns[i].role == ROLE_CONSUMER;
    }
    printf("{\"mode\": \"%s\", \"ops\": %llu, \"jobs\": %llu, \"ops_per_s\": %.1f, "
           "\"jobs_per_s\": %.1f, \"puts\": %llu, \"reserves\": %llu, \"deletes\": %llu, "
           "\"jobs_total\": %llu, \"inserted_total\": %llu, \"reserved_total\": %llu, ",
           names[mode], (unsigned long long)w_ops, (unsigned long long)w_jobs,
           secs > 0 ? (double)w_ops / secs : 0.0, secs > 0 ? (double)w_jobs / secs : 0.0,
           (unsigned long long)w_puts, (unsigned long long)w_reserves,
           (unsigned long long)w_deletes, (unsigned long long)jobs_done,
           (unsigned long long)inserted, (unsigned long long)reserved);
    printf("\"seconds\": %.6f, \"errors\": %llu, \"cpu_seconds\": %.6f, \"cpu_user\": %.6f, "
           "\"cpu_sys\": %.6f, \"wait_seconds\": %.6f, \"runq_wait_seconds\": %.6f, "
           "\"reads\": %llu, \"sends\": %llu, \"waits\": %llu, \"connections\": %d, "
           "\"producers\": %d, \"consumers\": %d, \"backlog\": %ld, \"open_at_end\": %d, "
           "\"size\": %ld, \"pipeline\": %ld, \"count\": %llu, \"tube\": \"%s\", ",
           secs, (unsigned long long)errors, (w->user1 - w->user0) + (w->sys1 - w->sys0),
           w->user1 - w->user0, w->sys1 - w->sys0, w->wait_s, w->runq1 - w->runq0,
           (unsigned long long)(n_reads - w->reads0), (unsigned long long)(n_sends - w->sends0),
           (unsigned long long)(n_waits - w->waits0), nconns, producers, consumers, backlog,
           open_conns, body_size, pipeline, (unsigned long long)count, tube);
    print_hist("put_", &hists[H_PUT]);
    print_hist("reserve_", &hists[H_RESERVE]);
    print_hist("delete_", &hists[H_DELETE]);
    printf("\"lat_samples\": %llu, \"lat_p50_us\": %.3f, \"lat_p90_us\": %.3f, "
           "\"lat_p99_us\": %.3f, \"lat_p999_us\": %.3f, \"lat_max_us\": %.3f}\n",
           (unsigned long long)hists[H_ALL].n, hist_quantile_us(&hists[H_ALL], 0.50),
           hist_quantile_us(&hists[H_ALL], 0.90), hist_quantile_us(&hists[H_ALL], 0.99),
           hist_quantile_us(&hists[H_ALL], 0.999), (double)hists[H_ALL].max / 1e3);
    fflush(stdout);
}

static int run(double warmup, double duration)
{
    struct epoll_event *events = calloc(MAX_EVENTS, sizeof *events);
    struct window w;
    double t_warm_end, t_end;
    int i;

    memset(&w, 0, sizeof w);
    parked = calloc((size_t)nconns, sizeof *parked);
    if (!events || !parked) {
        fprintf(stderr, "bstalk_load: out of memory\n");
        return 1;
    }
    setup_tubes(events, &w);
    /* The clock starts once every connection is up and set up. */
    t_warm_end = now_s() + warmup;
    t_end = t_warm_end + duration;
    if (warmup <= 0)
        window_open(&w, now_s());
    {
        uint64_t t = now_ns();
        for (i = 0; i < nconns; i++) {
            struct conn *c = &conns[i];
            long k;
            if (c->role == ROLE_CONSUMER) {
                send_reserve(c, t);
            } else if (c->role == ROLE_FILLER) {
                for (k = 0; k < pipeline && queued_puts < count; k++)
                    send_put(c, t);
            } else {
                send_put(c, t);
            }
            flush(c);
        }
    }
    while (open_conns > 0) {
        int n = wait_events(events, &w);
        double t = now_s();
        uint64_t tn = now_ns();
        if (n < 0)
            break;
        if (!measuring && t >= t_warm_end)
            window_open(&w, t);
        if (t >= t_end) {
            if (mode == MODE_FILL) {
                errors++;
                fprintf(stderr, "bstalk_load: only %llu of %llu jobs inserted in %.0f s\n",
                        (unsigned long long)jobs_done, (unsigned long long)count, duration);
            }
            break;
        }
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->open && (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                on_readable(c, tn);
            if (c->open && (events[i].events & EPOLLOUT))
                flush(c);
        }
        if (count_reached())
            break;
    }
    if (!measuring) /* every connection died during warm-up */
        window_open(&w, now_s());
    window_close(&w);
    close_all();
    print_result(&w);
    free(events);
    free(parked);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, 0, 'h'},     {"port", required_argument, 0, 'p'},
        {"connections", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
        {"pipeline", required_argument, 0, 'd'}, {"duration", required_argument, 0, 't'},
        {"warmup", required_argument, 0, 'w'},   {"mode", required_argument, 0, 'm'},
        {"count", required_argument, 0, 'n'},    {"backlog", required_argument, 0, 'b'},
        {"tube", required_argument, 0, 'T'},     {"help", no_argument, 0, '?'},
        {0, 0, 0, 0},
    };
    const char *host = "127.0.0.1";
    const char *port = NULL;
    double duration = 5.0, warmup = 1.0;
    struct addrinfo hints, *ai = NULL;
    struct rlimit rl;
    int opt, i, rc;
    long k;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = optarg; parse_long(optarg, "port", 1, 65535); break;
        case 'c': nconns = (int)parse_long(optarg, "connections", 1, 100000); break;
        case 's': body_size = parse_long(optarg, "size", 0, MAX_SIZE); break;
        case 'd': pipeline = parse_long(optarg, "pipeline", 1, 4096); break;
        case 't': duration = parse_double(optarg, "duration", 0.01, 3600); break;
        case 'w': warmup = parse_double(optarg, "warmup", 0, 3600); break;
        case 'n': count = (uint64_t)parse_long(optarg, "count", 0, 1000000000L); break;
        case 'b': backlog = parse_long(optarg, "backlog", 1, 1000000000L); break;
        case 'T':
            /* beanstalkd: 1-200 bytes of letters, digits and -+/;.$_(), not starting with -. */
            if (strlen(optarg) < 1 || strlen(optarg) > 200 || optarg[0] == '-' ||
                strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "0123456789-+/;.$_()") != strlen(optarg)) {
                fprintf(stderr, "bstalk_load: --tube must be a beanstalkd tube name\n");
                return 1;
            }
            tube = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "cycle") == 0)
                mode = MODE_CYCLE;
            else if (strcmp(optarg, "mix") == 0)
                mode = MODE_MIX;
            else if (strcmp(optarg, "fill") == 0)
                mode = MODE_FILL;
            else {
                fprintf(stderr, "bstalk_load: --mode must be cycle, mix or fill\n");
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
    if (mode == MODE_MIX && nconns < 2) {
        fprintf(stderr, "bstalk_load: mix needs at least 2 connections\n");
        return 1;
    }
    if (mode == MODE_FILL && count == 0) {
        fprintf(stderr, "bstalk_load: fill needs --count JOBS\n");
        return 1;
    }
    if (mode != MODE_FILL)
        pipeline = 1; /* one command in flight per connection */
    else
        warmup = 0.0; /* the whole fill is measured */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    alarm((unsigned)(SETUP_TIMEOUT_S + warmup + duration) + ALARM_SLACK_S);

    put_head_len = (size_t)snprintf(put_head, sizeof put_head, "put 1024 0 60 %ld\r\n", body_size);
    body = malloc((size_t)body_size + 1);
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!body || !conns) {
        fprintf(stderr, "bstalk_load: out of memory\n");
        return 1;
    }
    for (k = 0; k < body_size; k++)
        body[k] = (unsigned char)('a' + k % 26);

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "bstalk_load: cannot resolve %s:%s: %s\n", host, port, gai_strerror(rc));
        return 2;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        fprintf(stderr, "bstalk_load: epoll_create1: %s\n", strerror(errno));
        return 1;
    }
    for (i = 0; i < nconns; i++) {
        open_conn(&conns[i], ai, host, port, i);
        if (mode == MODE_CYCLE)
            conns[i].role = ROLE_CYCLER;
        else if (mode == MODE_FILL)
            conns[i].role = ROLE_FILLER;
        else
            conns[i].role = i < nconns / 2 ? ROLE_PRODUCER : ROLE_CONSUMER;
    }
    freeaddrinfo(ai);
    rc = run(warmup, duration);
    for (i = 0; i < nconns; i++) {
        free(conns[i].out);
        free(conns[i].in);
    }
    free(conns);
    free(body);
    return rc;
}
