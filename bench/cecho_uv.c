/*
 * cecho_uv: the C reference server of bench/run.py, on libuv (what uvloop
 * is built on), in its fastest ordinary form.
 *
 * Usage: cecho_uv PORT [--fanout]
 *
 * Echo (default): every read is written straight back with uv_try_write();
 * only what the kernel did not take is copied into a uv_write request, and
 * the connection stops reading until that is written (so its pending output
 * stays bounded by one read, 64 KiB).
 *
 * --fanout: every read is written to every other connection the same way
 * (one publisher, many subscribers); a subscriber whose earlier output is
 * still pending gets the new data queued behind it (the load generator's
 * closed loop bounds how much).
 *
 * One process, one loop, 127.0.0.1 only; raises its open-file limit to the
 * hard limit; exits on SIGTERM or SIGINT.
 *
 * Build (bench/run.py does it): gcc -O2 -Wall -Wextra -Werror -o cecho_uv cecho_uv.c -luv
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#define BUF_SIZE (64 * 1024)
#define BACKLOG 1024

struct conn {
    uv_tcp_t tcp; /* first: a uv_stream_t* is a struct conn* */
    struct conn *prev, *next;
    int pending; /* uv_write requests not yet completed */
};

struct wreq {
    uv_write_t req;
    struct conn *conn;
    char data[]; /* the bytes the kernel did not take at once */
};

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;
static struct conn *conns; /* all connections, for --fanout */
static int fanout;
static char readbuf[BUF_SIZE];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(readbuf, BUF_SIZE); /* one loop thread: one buffer is enough */
}

static void on_closed(uv_handle_t *h) { free(h); }

static void drop(struct conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->conn;
    free(w);
    c->pending--;
    if (status < 0) {
        drop(c);
        return;
    }
    if (!fanout && c->pending == 0 && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* Write data to c: at once if nothing is pending, queue the rest. Returns 1 if
 * some of it is still pending, -1 on error. */
static int send_to(struct conn *c, const char *data, size_t len)
{
    struct wreq *w;
    uv_buf_t b;
    size_t done = 0;
    if (c->pending == 0) {
        int n;
        b = uv_buf_init((char *)data, (unsigned)len);
        n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n >= 0)
            done = (size_t)n;
        else if (n != UV_EAGAIN)
            return -1;
        if (done == len)
            return 0;
    }
    w = malloc(sizeof *w + (len - done));
    if (w == NULL)
        return -1;
    w->conn = c;
    memcpy(w->data, data + done, len - done);
    b = uv_buf_init(w->data, (unsigned)(len - done));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(w);
        return -1;
    }
    c->pending++;
    return 1;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = (struct conn *)s, *o, *next;
    if (nread < 0) {
        drop(c);
        return;
    }
    if (nread == 0)
        return;
    if (!fanout) {
        int r = send_to(c, buf->base, (size_t)nread);
        if (r < 0)
            drop(c);
        else if (r > 0)
            uv_read_stop(s); /* resume once the pending output is written */
        return;
    }
    for (o = conns; o != NULL; o = next) {
        next = o->next;
        if (o != c && send_to(o, buf->base, (size_t)nread) < 0)
            drop(o);
    }
}

static void on_connection(uv_stream_t *srv, int status)
{
    struct conn *c;
    if (status < 0)
        return;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    uv_tcp_init(loop, &c->tcp);
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    uv_stop(loop);
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    struct rlimit rl;
    long port;
    char *end;
    int rc;

    if (argc < 2 || argc > 3 || (port = strtol(argv[1], &end, 10)) <= 0 || port > 65535 || *end ||
        (argc == 3 && strcmp(argv[2], "--fanout") != 0)) {
        fprintf(stderr, "usage: cecho_uv PORT [--fanout]\n");
        return 1;
    }
    fanout = argc == 3;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    loop = uv_default_loop();
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_tcp_init(loop, &server);
    uv_ip4_addr("127.0.0.1", (int)port, &addr);
    if ((rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&server, BACKLOG, on_connection)) < 0) {
        fprintf(stderr, "cecho_uv: listen on 127.0.0.1:%ld: %s\n", port, uv_strerror(rc));
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
