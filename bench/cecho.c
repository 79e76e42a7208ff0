/*
 * cecho: the cheapest echo server this machine can run, to calibrate bench/echo.py.
 *
 * Single-threaded, non-blocking, level-triggered epoll on 127.0.0.1:PORT: one
 * read() per ready connection per loop turn, written straight back. It is not
 * a contender but a ceiling: if the load generator drives cecho much faster
 * than the Python servers, it has headroom and is not what limits them.
 *
 * Rules it keeps: each connection's unsent output is bounded (it stops reading
 * a connection until its pending output is written); it exits on SIGTERM or
 * SIGINT. Usage: cecho PORT
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -o cecho cecho.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024) /* also the bound on one connection's pending output */
#define MAX_EVENTS 1024
#define BACKLOG 1024

struct conn {
    int fd;
    size_t off, len; /* pending output: buf[off:len] */
    char buf[BUF_SIZE];
};

static volatile sig_atomic_t stop;

static void on_signal(int signum)
{
    (void)signum;
    stop = 1;
}

static void drop(struct conn *c)
{
    close(c->fd);
    free(c);
}

static void watch(int ep, struct conn *c, int op, unsigned events)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = c;
    if (epoll_ctl(ep, op, c->fd, &ev) < 0) {
        perror("cecho: epoll_ctl");
        exit(1);
    }
}

/* Write pending output; return 0 when all of it is gone, 1 if some remains, -1 on error. */
static int flush(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -1;
        }
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    return 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    struct epoll_event events[MAX_EVENTS];
    struct sigaction sa;
    int lfd, ep, one = 1;
    long port;
    char *end;

    if (argc != 2 || (port = strtol(argv[1], &end, 10)) <= 0 || port > 65535 || *end) {
        fprintf(stderr, "usage: cecho PORT\n");
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, BACKLOG) < 0) {
        perror("cecho: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    {
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.ptr = NULL; /* NULL marks the listening socket */
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    }

    while (!stop) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 200);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                    continue; /* EAGAIN, or out of descriptors: try again next turn */
                c = malloc(sizeof *c);
                if (c == NULL) {
                    close(fd);
                    continue;
                }
                c->fd = fd;
                c->off = c->len = 0;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                watch(ep, c, EPOLL_CTL_ADD, EPOLLIN);
                continue;
            }
            if (c->len > 0) { /* writable again: finish the old output first */
                int r = flush(c);
                if (r < 0) {
                    drop(c);
                    continue;
                }
                if (r == 0)
                    watch(ep, c, EPOLL_CTL_MOD, EPOLLIN);
                continue;
            }
            ssize_t got = read(c->fd, c->buf, BUF_SIZE);
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (got <= 0) {
                drop(c);
                continue;
            }
            c->len = (size_t)got;
            int r = flush(c);
            if (r < 0)
                drop(c);
            else if (r > 0)
                watch(ep, c, EPOLL_CTL_MOD, EPOLLOUT);
        }
    }
    close(ep);
    close(lfd);
    return 0;
}
