/*
 * loadgen: a closed-loop TCP echo load generator for bench/echo.py.
 *
 * Single-threaded, non-blocking, level-triggered epoll. Each of `connections`
 * connections keeps `pipeline` messages of `size` bytes in flight: it sends
 * `pipeline` messages, and every time one whole message's worth of echoed
 * bytes has come back it sends one more. Every message ends with '\n' and
 * contains no other '\n', so a line-framed echo server works unchanged. The
 * echoed stream is compared with what was sent; a mismatch counts as an error.
 *
 * Messages are counted after `warmup` seconds for `duration` seconds; then the
 * program closes its sockets and prints one JSON line on stdout:
 *   {"msgs":..,"msgs_total":..,"seconds":..,"msgs_per_s":..,"errors":..,
 *    "cpu_seconds":..,...}
 * Over the measured window: cpu_seconds (cpu_user, cpu_sys) is this process's
 * own CPU time (getrusage); wait_seconds is the time spent in epoll_wait(), so
 * 1 - wait_seconds/seconds is how busy the generator was (near 1: it may be the
 * bottleneck); runq_wait_seconds is the time it was runnable but another task
 * had its CPU (noise); reads, sends and waits count the syscalls. Where the
 * kernel accounts IRQ time apart (as /proc/stat's softirq column shows), the
 * softirq time in which loopback TCP does much of its work is not in cpu_*.
 *
 * --spin-us U polls without blocking for U microseconds after the last event
 * before sleeping in epoll_wait (default 0). On a quiet machine it spares the
 * server the cost of waking the generator; on a shared one it steals CPU from
 * whatever else runs on the generator's core.
 *
 * Rules it keeps: never more than `pipeline` messages in flight per connection
 * (so every buffer is bounded by pipeline*size); one read() and at most one
 * send() per ready connection per loop turn; it stops by itself at the
 * deadline (and an alarm() kills it if something hangs). Exit status: 0 on a
 * completed run, 1 on bad arguments, 2 if a connection could not be made.
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -o loadgen loadgen.c
 */
#define _GNU_SOURCE
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

/* One read takes up to this much; a connection never has more than
 * pipeline*size bytes in flight, so one read normally drains it. */
#define READ_BUF_SIZE (256 * 1024)
#define MAX_EVENTS 1024
#define EPOLL_TIMEOUT_MS 50
#define CONNECT_TIMEOUT_S 5
/* Extra seconds past warmup+duration before SIGALRM kills a hung run. */
#define ALARM_SLACK_S 30

struct conn {
    int fd;
    int open;
    int want_out;      /* EPOLLOUT armed */
    uint64_t sent;     /* bytes sent so far (stream offset of the next send) */
    uint64_t recvd;    /* bytes received so far */
    uint64_t to_send;  /* bytes queued but not yet sent */
};

static struct conn *conns;
static int nconns = 100;
static int epfd = -1;
static long msg_size = 64;
static long pipeline = 1;
static unsigned char *pattern; /* (pipeline + 1) messages back to back */
static unsigned char readbuf[READ_BUF_SIZE];
static uint64_t errors;
static int open_conns;
static int stopping;
/* Syscall counts over the measured window, to show how much each one carries. */
static uint64_t n_reads, n_sends, n_waits;
static double spin_s; /* --spin-us: poll without blocking this long before sleeping */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

static void usage(FILE *out)
{
    fprintf(out,
            "usage: loadgen [--host H] [--port P] [--connections N] [--size BYTES]\n"
            "               [--pipeline D] [--duration S] [--warmup S] [--spin-us U]\n"
            "Closed-loop echo load: N connections, D messages of BYTES (ending in '\\n')\n"
            "in flight each; prints one JSON line with the messages echoed after warm-up.\n");
}

static void conn_error(struct conn *c, const char *what, int err)
{
    static int reported;
    errors++;
    if (!reported && !stopping) {
        fprintf(stderr, "loadgen: connection %ld: %s%s%s\n", (long)(c - conns), what,
                err ? ": " : "", err ? strerror(err) : "");
        reported = 1;
    }
    if (c->open) {
        close(c->fd); /* close() also removes it from the epoll set */
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

/* Send what is queued: one send() unless it is interrupted. */
static void flush(struct conn *c)
{
    while (c->open && c->to_send > 0) {
        size_t off = (size_t)(c->sent % (uint64_t)msg_size);
        ssize_t n = send(c->fd, pattern + off, (size_t)c->to_send, MSG_NOSIGNAL);
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
        if (c->to_send > 0) { /* short write: the socket buffer is full */
            set_out(c, 1);
            return;
        }
    }
    if (c->open && c->want_out)
        set_out(c, 0);
}

/* Read once; return the number of messages this read completed. */
static uint64_t on_readable(struct conn *c)
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
    if (c->recvd + (uint64_t)n > c->sent) {
        conn_error(c, "server echoed more bytes than were sent", 0);
        return 0;
    }
    /* n <= sent - recvd <= pipeline*size, so this stays inside `pattern`. */
    off = (size_t)(c->recvd % (uint64_t)msg_size);
    if (memcmp(readbuf, pattern + off, (size_t)n) != 0) {
        conn_error(c, "echoed bytes differ from the bytes sent", 0);
        return 0;
    }
    done = (c->recvd + (uint64_t)n) / (uint64_t)msg_size - c->recvd / (uint64_t)msg_size;
    c->recvd += (uint64_t)n;
    return done;
}

static int connect_one(const struct addrinfo *ai, const char *host, const char *port, int i)
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

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, 0, 'h'},   {"port", required_argument, 0, 'p'},
        {"connections", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
        {"pipeline", required_argument, 0, 'd'}, {"duration", required_argument, 0, 't'},
        {"warmup", required_argument, 0, 'w'}, {"spin-us", required_argument, 0, 'u'},
        {"help", no_argument, 0, '?'},
        {0, 0, 0, 0},
    };
    const char *host = "127.0.0.1";
    const char *port = NULL;
    double duration = 5.0, warmup = 1.0;
    struct addrinfo hints, *ai = NULL;
    struct epoll_event *events;
    uint64_t msgs = 0, msgs_total = 0;
    double t_start, t_warm_end, t_end, t0 = 0.0, t1, seconds;
    double user0 = 0.0, sys0 = 0.0, user1, sys1, wait_s = 0.0, last_event, runq0 = 0.0, runq1;
    uint64_t reads0 = 0, sends0 = 0, waits0 = 0;
    int measuring = 0, opt, i, rc;
    long k;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = optarg; parse_long(optarg, "port", 1, 65535); break;
        case 'c': nconns = (int)parse_long(optarg, "connections", 1, 100000); break;
        case 's': msg_size = parse_long(optarg, "size", 2, 1 << 20); break;
        case 'd': pipeline = parse_long(optarg, "pipeline", 1, 4096); break;
        case 't': duration = parse_double(optarg, "duration", 0.01, 3600); break;
        case 'w': warmup = parse_double(optarg, "warmup", 0, 3600); break;
        case 'u': spin_s = parse_double(optarg, "spin-us", 0, 1e6) / 1e6; break;
        default: usage(stderr); return 1;
        }
    }
    if (port == NULL || optind != argc) {
        usage(stderr);
        return 1;
    }
    alarm((unsigned)(warmup + duration) + ALARM_SLACK_S);

    /* The message: printable bytes, no '\n' but the last one. */
    pattern = malloc((size_t)(msg_size * (pipeline + 1)));
    conns = calloc((size_t)nconns, sizeof *conns);
    events = calloc(MAX_EVENTS, sizeof *events);
    if (!pattern || !conns || !events) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    for (k = 0; k < msg_size * (pipeline + 1); k++)
        pattern[k] = (k % msg_size == msg_size - 1) ? '\n' : (unsigned char)('a' + (k % msg_size) % 26);

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
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
    for (i = 0; i < nconns; i++) {
        struct epoll_event ev;
        struct conn *c = &conns[i];
        c->fd = connect_one(ai, host, port, i);
        c->open = 1;
        open_conns++;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            fprintf(stderr, "loadgen: epoll_ctl: %s\n", strerror(errno));
            return 1;
        }
    }
    freeaddrinfo(ai);

    /* The clock starts once every connection is up. */
    t_start = now_s();
    t_warm_end = t_start + warmup;
    t_end = t_warm_end + duration;
    for (i = 0; i < nconns; i++) {
        conns[i].to_send = (uint64_t)(pipeline * msg_size);
        flush(&conns[i]);
    }

    last_event = now_s();
    while (open_conns > 0) {
        double tw = now_s();
        int n = epoll_wait(epfd, events, MAX_EVENTS,
                           tw - last_event < spin_s ? 0 : EPOLL_TIMEOUT_MS);
        double t = now_s();
        n_waits++;
        if (n > 0)
            last_event = t;
        if (measuring)
            wait_s += t - tw;
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "loadgen: epoll_wait: %s\n", strerror(errno));
            break;
        }
        if (!measuring && t >= t_warm_end) {
            measuring = 1;
            t0 = t;
            cpu_s(&user0, &sys0);
            runq0 = runq_wait_s();
            reads0 = n_reads;
            sends0 = n_sends;
            waits0 = n_waits;
        }
        if (t >= t_end)
            break;
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            uint64_t done = 0;
            if (!c->open)
                continue;
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                done = on_readable(c);
            if (!c->open)
                continue;
            if (done) {
                msgs_total += done;
                if (measuring)
                    msgs += done;
                c->to_send += done * (uint64_t)msg_size;
            }
            flush(c);
        }
    }
    t1 = now_s();
    cpu_s(&user1, &sys1);
    runq1 = runq_wait_s();
    stopping = 1;
    for (i = 0; i < nconns; i++) {
        if (conns[i].open) {
            close(conns[i].fd);
            conns[i].open = 0;
        }
    }
    close(epfd);

    if (!measuring) { /* every connection died during warm-up */
        t0 = t1;
        user0 = user1;
        sys0 = sys1;
        runq0 = runq1;
        reads0 = n_reads;
        sends0 = n_sends;
        waits0 = n_waits;
    }
    seconds = t1 - t0;
    printf("{\"msgs\": %llu, \"msgs_total\": %llu, \"seconds\": %.6f, \"msgs_per_s\": %.1f, "
           "\"errors\": %llu, \"cpu_seconds\": %.6f, \"cpu_user\": %.6f, \"cpu_sys\": %.6f, "
           "\"wait_seconds\": %.6f, \"runq_wait_seconds\": %.6f, \"reads\": %llu, \"sends\": %llu, \"waits\": %llu, \"connections\": %d, "
           "\"open_at_end\": %d, \"size\": %ld, \"pipeline\": %ld}\n",
           (unsigned long long)msgs, (unsigned long long)msgs_total, seconds,
           seconds > 0 ? (double)msgs / seconds : 0.0, (unsigned long long)errors,
           (user1 - user0) + (sys1 - sys0), user1 - user0, sys1 - sys0, wait_s, runq1 - runq0,
           (unsigned long long)(n_reads - reads0), (unsigned long long)(n_sends - sends0),
           (unsigned long long)(n_waits - waits0), nconns, open_conns, msg_size, pipeline);
    fflush(stdout);
    free(pattern);
    free(conns);
    free(events);
    return 0;
}
