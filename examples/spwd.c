/* SPDX-License-Identifier: MIT */
/*
 * spwd: a small master/worker HTTP/1.1 daemon on spillway.
 *
 * The master asks the module for one SO_REUSEPORT listener per worker
 * (spw_group_listen) and forks the workers; worker i serves member i's
 * ring. Each worker is single-threaded and event-driven: one epoll set
 * holds its ring fd (EPOLLIN while connections wait for it), a signalfd
 * and its non-blocking client sockets. Every GET is answered with
 * "hello from worker N pid P".
 *
 *   SIGHUP   reload: a new generation opens the same rings, then the old
 *            one hands its rings over and drains (docs/spwd.md)
 *   SIGQUIT  graceful stop: every worker drains, then the master exits 0
 *   SIGTERM, SIGINT  fast stop
 *   SIGUSR1  log the group's counters and the requests of each worker
 *
 * Ring hand-over. A CQE's fd lives in the file table of the process that
 * entered, so the kernel lets one process at a time (the member's
 * "owner") have a ring's CQEs: another's enter fails with EBUSY while
 * the owner has CQEs to reap. A new worker
 * opens its ring, reports READY through the master's pipe and waits; the
 * master then sends SIGQUIT to the old owner, which serves every CQE
 * already posted, closes the ring (its waiting connections stay queued on
 * the ring, which the new worker still holds open) and reports RELEASED;
 * the master then sends SIGUSR2 ("the ring is yours") to the new worker.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spillway.h"

#define BACKLOG		511
#define IN_MAX		8192	/* request head limit: 431 beyond */
#define OUT_HIGH	65536	/* stop parsing pipelined requests above this */
#define TICK_MS		250	/* worker housekeeping period */
#define IDLE_MS		30000	/* keep-alive / slow request timeout */
#define LINGER_MS	2000	/* wait for the client's FIN after ours */
#define DRAIN_IDLE_MS	1000	/* when stopping: an idle connection's last chance */
#define DRAIN_IDLE_TICKS (DRAIN_IDLE_MS / TICK_MS)
#define DRAIN_MAX_MS	30000	/* when stopping: give up on slow clients */
#define BACKOFF_MIN_MS	100
#define BACKOFF_MAX_MS	5000
#define HEALTHY_MS	10000	/* a worker that lived this long resets the back-off */

/* Worker -> master messages on one pipe; each write is atomic (< PIPE_BUF). */
enum { MSG_READY = 1, MSG_RELEASED };
struct msg {
	int type;
	pid_t pid;
	unsigned member;
};

/* Per worker process, in memory shared by the master and every worker. */
struct slot {
	unsigned long long requests;
	unsigned long long conns;
};

static int log_fd = STDERR_FILENO;
static char log_who[64] = "master";
static const char *log_path;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* One timestamped line, written with one write(): lines never interleave. */
static void __attribute__((format(printf, 1, 2))) logf_(const char *fmt, ...)
{
	char buf[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	size_t n;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	n += snprintf(buf + n, sizeof(buf) - n, ".%03ld %s: ",
		      ts.tv_nsec / 1000000, log_who);
	va_start(ap, fmt);
	r = vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
	va_end(ap);
	n = r < 0 ? n : n + r < sizeof(buf) - 1 ? n + r : sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(log_fd, buf, n) < 0) {
		/* nowhere left to complain */
	}
}

/* (Re)open the log file; stderr when none was given. */
static int log_open(void)
{
	int fd;

	if (!log_path)
		return 0;
	fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = fd;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Worker                                                              */
/* ------------------------------------------------------------------ */

enum { C_ACTIVE, C_LINGER };

struct conn {
	int fd;
	int state;		/* C_* */
	unsigned events;	/* what epoll waits for now */
	bool close_after;	/* the last response said "Connection: close" */
	bool eof;		/* the client shut its side */
	bool dead;		/* closed; freed after this epoll batch */
	long long last;		/* last activity, ms */
	unsigned idle_ticks;	/* housekeeping rounds without activity */
	unsigned long long body_left;	/* request body bytes to skip */
	size_t in_len;
	char in[IN_MAX];
	char *out;
	size_t out_len, out_off, out_cap;
	struct conn *prev, *next;
};

struct worker {
	unsigned member;
	pid_t pid;
	int ep, sigfd, notify_fd;
	struct spw_ring ring;
	bool ring_open;		/* we hold the ring fd */
	bool owner;		/* we enter and reap it */
	bool ring_polled;	/* the ring fd is in the epoll set */
	bool quitting;
	long long now, quit_at, last_tick;
	unsigned nconns;
	unsigned idle_closed, timed_out;	/* closed by us, for the log */
	struct conn *conns;	/* live connections */
	struct conn *graveyard;	/* closed in this batch */
	struct slot *slot;
	const volatile int *stopping;	/* master's graceful stop, shared */
};

static void notify_master(struct worker *w, int type)
{
	struct msg m = { .type = type, .pid = w->pid, .member = w->member };

	if (write(w->notify_fd, &m, sizeof(m)) != sizeof(m))
		logf_("cannot reach the master: %s", strerror(errno));
}

static void ring_poll(struct worker *w, bool on)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &w->ring };

	if (on == w->ring_polled || !w->owner)
		return;
	epoll_ctl(w->ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, w->ring.ring_fd, &ev);
	w->ring_polled = on;
}

static void conn_want(struct worker *w, struct conn *c, unsigned events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	if (c->events != events && !epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev))
		c->events = events;
}

static void conn_close(struct worker *w, struct conn *c)
{
	if (c->dead)
		return;
	close(c->fd);		/* also leaves the epoll set */
	c->dead = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = w->graveyard;
	w->graveyard = c;
	w->nconns--;
	/* a free fd again: take connections if EMFILE had stopped us */
	if (w->ring_open && !w->quitting)
		ring_poll(w, true);
}

static void conn_open(struct worker *w, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct epoll_event ev = { .events = EPOLLIN };

	ev.data.ptr = c;
	if (!c || epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev)) {
		logf_("connection dropped: %s", strerror(c ? errno : ENOMEM));
		free(c);
		close(fd);
		return;
	}
	c->fd = fd;
	c->events = EPOLLIN;
	c->last = w->now;
	c->next = w->conns;
	if (c->next)
		c->next->prev = c;
	w->conns = c;
	w->nconns++;
	__atomic_fetch_add(&w->slot->conns, 1, __ATOMIC_RELAXED);
}

static int out_append(struct conn *c, const char *p, size_t len)
{
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 1024;
		char *n;

		while (cap < c->out_len + len)
			cap *= 2;
		n = realloc(c->out, cap);
		if (!n)
			return -ENOMEM;
		c->out = n;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, p, len);
	c->out_len += len;
	return 0;
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 405: return "Method Not Allowed";
	case 431: return "Request Header Fields Too Large";
	case 501: return "Not Implemented";
	default:  return "HTTP Version Not Supported";
	}
}

/* The Date header's value, formatted once per second. */
static const char *http_date(void)
{
	static char buf[40];
	static time_t cached;
	time_t t = time(NULL);
	struct tm tm;

	if (t != cached) {
		gmtime_r(&t, &tm);
		strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		cached = t;
	}
	return buf;
}

static void respond(struct worker *w, struct conn *c, int status, bool head,
		    bool keep_alive, int minor)
{
	char hdr[512], body[96];
	int blen, hlen;

	if (status == 200)
		blen = snprintf(body, sizeof(body), "hello from worker %u pid %d\n",
				w->member, w->pid);
	else
		blen = snprintf(body, sizeof(body), "%d %s\n", status, reason(status));
	hlen = snprintf(hdr, sizeof(hdr),
			"HTTP/1.1 %d %s\r\nServer: spwd\r\nDate: %s\r\n%s"
			"Content-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n",
			status, reason(status), http_date(),
			status == 405 ? "Allow: GET, HEAD\r\n" : "", blen,
			!keep_alive ? "Connection: close\r\n" :
			minor == 0 ? "Connection: keep-alive\r\n" : "");
	if (out_append(c, hdr, hlen) || (!head && out_append(c, body, blen))) {
		conn_close(w, c);
		return;
	}
	c->close_after = !keep_alive;
	if (status == 200)
		__atomic_fetch_add(&w->slot->requests, 1, __ATOMIC_RELAXED);
}

static bool is_tchar(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Does the comma-separated list @v (length @len) hold @token? */
static bool has_token(const char *v, size_t len, const char *token)
{
	size_t tl = strlen(token);

	while (len) {
		const char *comma = memchr(v, ',', len);
		size_t n = comma ? (size_t)(comma - v) : len;
		const char *s = v, *e = v + n;

		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - s) == tl && !strncasecmp(s, token, tl))
			return true;
		if (!comma)
			break;
		len -= n + 1;
		v = comma + 1;
	}
	return false;
}

struct request {
	int minor;		/* HTTP/1.minor */
	bool get, head;		/* the two methods we serve */
	bool conn_close, conn_keep_alive;
	unsigned long long content_length;
};

/*
 * Parse one request head (request line and header lines, CRLF or bare LF,
 * up to and including the blank line). Returns the status to answer.
 */
static int parse_head(const char *p, size_t len, struct request *rq)
{
	const char *end = p + len, *eol, *s;
	bool have_cl = false;
	int hosts = 0;

	memset(rq, 0, sizeof(*rq));
	/* request-line = method SP request-target SP HTTP-version */
	for (s = p; s < end && is_tchar(*s); s++)
		;
	if (s == p || s >= end || *s != ' ')
		return 400;
	rq->get = s - p == 3 && !memcmp(p, "GET", 3);
	rq->head = s - p == 4 && !memcmp(p, "HEAD", 4);
	p = ++s;
	while (s < end && (unsigned char)*s > ' ' && *s != 0x7f)
		s++;
	if (s == p || s >= end || *s != ' ')
		return 400;
	p = s + 1;
	eol = memchr(p, '\n', end - p);
	if (!eol || eol - p < 8 || memcmp(p, "HTTP/", 5) || p[6] != '.' ||
	    p[5] < '0' || p[5] > '9' || p[7] < '0' || p[7] > '9' ||
	    (eol - p != 8 && !(eol - p == 9 && p[8] == '\r')))
		return 400;
	if (p[5] != '1')
		return 505;
	rq->minor = p[7] - '0';

	/* header-field = field-name ":" OWS field-value OWS */
	for (p = eol + 1; p < end; p = eol + 1) {
		const char *name = p, *v, *ve;
		size_t nl;

		eol = memchr(p, '\n', end - p);
		ve = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
		if (ve == p)
			break;			/* the blank line */
		while (p < ve && is_tchar(*p))
			p++;
		if (p == name || p == ve || *p != ':')
			return 400;		/* also obsolete line folding */
		nl = p - name;
		for (v = p + 1; v < ve && (*v == ' ' || *v == '\t'); v++)
			;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		for (s = v; s < ve; s++)
			if (((unsigned char)*s < ' ' && *s != '\t') || *s == 0x7f)
				return 400;
		if (nl == 4 && !strncasecmp(name, "host", 4)) {
			hosts++;
		} else if (nl == 10 && !strncasecmp(name, "connection", 10)) {
			rq->conn_close |= has_token(v, ve - v, "close");
			rq->conn_keep_alive |= has_token(v, ve - v, "keep-alive");
		} else if (nl == 14 && !strncasecmp(name, "content-length", 14)) {
			unsigned long long cl = 0;

			if (v == ve || ve - v > 15)
				return 400;
			for (s = v; s < ve; s++) {
				if (*s < '0' || *s > '9')
					return 400;
				cl = cl * 10 + (*s - '0');
			}
			if (have_cl && cl != rq->content_length)
				return 400;
			have_cl = true;
			rq->content_length = cl;
		} else if (nl == 17 && !strncasecmp(name, "transfer-encoding", 17)) {
			return 501;		/* no request bodies but sized ones */
		}
	}
	/* RFC 9112 3.2: an HTTP/1.1 request without exactly one Host is bad */
	if (rq->minor >= 1 && hosts != 1)
		return 400;
	return rq->get || rq->head ? 200 : 405;
}

/* Offset just past the blank line ending the head in @p, 0 if not there yet. */
static size_t head_end(const char *p, size_t len)
{
	const char *nl = p, *end = p + len;

	while ((nl = memchr(nl, '\n', end - nl))) {
		nl++;
		if (nl < end && *nl == '\n')
			return nl + 1 - p;
		if (nl + 1 < end && nl[0] == '\r' && nl[1] == '\n')
			return nl + 2 - p;
	}
	return 0;
}

static void consume(struct conn *c, size_t n)
{
	memmove(c->in, c->in + n, c->in_len - n);
	c->in_len -= n;
}

/*
 * Answer the requests already buffered (pipelining), as long as the
 * responses waiting to go out stay below OUT_HIGH. Returns true if it
 * consumed anything.
 */
static bool conn_parse(struct worker *w, struct conn *c)
{
	bool progress = false;

	while (!c->close_after && !c->dead && c->in_len &&
	       c->out_len - c->out_off < OUT_HIGH) {
		struct request rq;
		size_t n = 0;
		int status;

		if (c->body_left) {	/* a body we do not use */
			n = c->body_left < c->in_len ? c->body_left : c->in_len;
			c->body_left -= n;
			consume(c, n);
			progress = true;
			continue;
		}
		/* RFC 9112 2.2: ignore empty lines before a request line */
		while (n < c->in_len && (c->in[n] == '\r' || c->in[n] == '\n'))
			n++;
		if (n) {
			consume(c, n);
			progress = true;
			continue;
		}
		n = head_end(c->in, c->in_len);
		if (!n) {
			if (c->in_len == IN_MAX)	/* never going to fit */
				respond(w, c, 431, false, false, 1);
			return progress || c->close_after;
		}
		status = parse_head(c->in, n, &rq);
		consume(c, n);
		progress = true;
		if (status != 200 && status != 405) {
			respond(w, c, status, false, false, 1);
			break;
		}
		c->body_left = rq.content_length;
		respond(w, c, status, rq.head,
			!w->quitting && (rq.minor ? !rq.conn_close : rq.conn_keep_alive),
			rq.minor);
	}
	return progress;
}

/* Write what is waiting: 1 all out, 0 would block, -1 error. */
static int conn_flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -1;
		}
		c->out_off += n;
	}
	c->out_off = c->out_len = 0;
	return 1;
}

/*
 * The last response is out: send our FIN, and read (and discard) until
 * the client's, so that late client bytes do not turn our close into a
 * reset that could destroy the response before the client read it.
 */
static void conn_finish(struct worker *w, struct conn *c)
{
	if (c->eof || shutdown(c->fd, SHUT_WR)) {
		conn_close(w, c);
		return;
	}
	c->state = C_LINGER;
	c->last = w->now;
	conn_want(w, c, EPOLLIN);
}

static void conn_linger(struct worker *w, struct conn *c)
{
	char buf[4096];

	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		conn_close(w, c);
		return;
	}
}

/* Drive one connection as far as it goes without blocking. */
static void conn_run(struct worker *w, struct conn *c)
{
	if (c->state == C_LINGER) {
		conn_linger(w, c);
		return;
	}
	while (!c->dead) {
		ssize_t n;

		if (c->out_off < c->out_len) {
			int r = conn_flush(c);

			if (r < 0) {
				conn_close(w, c);
				return;
			}
			if (!r) {	/* stop reading until the client reads */
				conn_want(w, c, EPOLLOUT);
				return;
			}
			c->last = w->now;
			c->idle_ticks = 0;
		}
		if (c->close_after) {
			conn_finish(w, c);
			return;
		}
		if (conn_parse(w, c))
			continue;
		if (c->eof) {		/* nothing more will come */
			conn_close(w, c);
			return;
		}
		n = recv(c->fd, c->in + c->in_len, IN_MAX - c->in_len, 0);
		if (n > 0) {
			c->in_len += n;
			c->last = w->now;
			c->idle_ticks = 0;
		} else if (!n) {
			c->eof = true;
		} else if (errno == EAGAIN) {
			conn_want(w, c, EPOLLIN);
			return;
		} else if (errno != EINTR) {
			conn_close(w, c);
			return;
		}
	}
}

/*
 * Take every CQE posted to our ring. Each is a connected socket already
 * in our file table; most clients have sent their request by now, so try
 * to answer at once instead of waiting for the next epoll round.
 */
static void ring_reap(struct worker *w)
{
	struct spw_cqe *cqe;
	unsigned head, n = 0;

	spw_for_each_cqe(&w->ring, head, cqe) {
		conn_open(w, cqe->fd);
		n++;
	}
	spw_cq_advance(&w->ring, n);
	/* the newest connections are at the front of the list */
	for (struct conn *c = w->conns, *next; n && c; c = next, n--) {
		next = c->next;
		conn_run(w, c);
	}
}

/* The ring fd is readable: have the kernel hand over what waits, reap it. */
static void ring_ready(struct worker *w)
{
	int ret = spw_enter(&w->ring, 0, NULL);

	if (ret == -EMFILE || ret == -ENFILE) {
		/*
		 * The kernel sends the connections waiting for us to siblings
		 * that can take them; stop polling until an fd frees.
		 */
		logf_("out of file descriptors with %u connections: pausing the ring",
		      w->nconns);
		ring_poll(w, false);
	} else if (ret < 0 && ret != -EINTR) {
		logf_("enter: %s", strerror(-ret));
	}
	ring_reap(w);
}

/*
 * The ring is ours now. Whatever a previous owner left posted (fds of
 * its table) the kernel discarded when it closed the ring; our first
 * enter makes the ring's CQEs ours.
 */
static void ring_take(struct worker *w)
{
	if (w->owner || w->quitting)
		return;
	w->owner = true;
	ring_poll(w, true);
}

/*
 * Stop taking: serve every CQE already posted to us (they are fds in our
 * table, nobody else can), close the ring and tell the master. What still
 * waits for the ring stays queued on it for the next owner, or moves to
 * the siblings if nobody holds it any more.
 */
static void worker_quit(struct worker *w)
{
	if (w->quitting)
		return;
	w->quitting = true;
	w->quit_at = w->now;
	for (struct conn *c = w->conns; c; c = c->next)
		c->idle_ticks = 0;
	if (w->owner) {
		ring_poll(w, false);
		/* a graceful stop: nobody comes after us, take what waits too */
		if (*w->stopping)
			spw_enter(&w->ring, 0, NULL);
		ring_reap(w);
	}
	spw_ring_exit(&w->ring);
	w->ring_open = w->owner = false;
	notify_master(w, MSG_RELEASED);
	logf_("ring closed, draining %u connections", w->nconns);
}

static void worker_signals(struct worker *w)
{
	struct signalfd_siginfo si;
	bool go = false, quit = false;

	while (read(w->sigfd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGUSR2)
			go = true;
		else if (si.ssi_signo == SIGQUIT)
			quit = true;
	}
	if (go)
		ring_take(w);
	if (quit)
		worker_quit(w);
}

/*
 * Timeouts, once per tick. When stopping, an idle keep-alive connection
 * gets DRAIN_IDLE_MS to bring a request (answered with "Connection:
 * close") before we close it: closing races with a request already on its
 * way, which the client would see as an error. That grace is counted in
 * ticks we ran, not in wall-clock time, so that after the worker was not
 * scheduled for a while (a paused VM, SIGSTOP) clients get their turn
 * before the verdict.
 */
static void worker_tick(struct worker *w)
{
	struct conn *c, *next;

	for (c = w->conns; c; c = next) {
		long long idle = w->now - c->last;

		next = c->next;
		c->idle_ticks++;
		if (c->state == C_LINGER ? idle >= LINGER_MS : idle >= IDLE_MS) {
			w->timed_out += c->state == C_ACTIVE;
			conn_close(w, c);
		} else if (w->quitting && w->now - w->quit_at >= DRAIN_MAX_MS) {
			w->timed_out++;
			conn_close(w, c);
		} else if (w->quitting && c->state == C_ACTIVE && !c->in_len &&
			   c->out_off == c->out_len && !c->body_left &&
			   c->idle_ticks > DRAIN_IDLE_TICKS) {
			w->idle_closed++;
			conn_close(w, c);
		}
	}
}

static void __attribute__((noreturn))
worker_main(pid_t master, int group_fd, unsigned member, bool owner, int cpu,
	    int notify_fd, struct slot *slot, const volatile int *stopping)
{
	struct worker w = { .member = member, .pid = getpid(), .notify_fd = notify_fd,
			    .slot = slot, .stopping = stopping };
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &w.sigfd };
	sigset_t mask;
	int ret;

	snprintf(log_who, sizeof(log_who), "worker %u pid %d", member, w.pid);
	/* the master blocked these before fork: no signal is lost meanwhile */
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGQUIT);
	sigaddset(&mask, SIGUSR2);
	sigprocmask(SIG_SETMASK, &mask, NULL);
	/* a master that dies unexpectedly takes its workers down gracefully */
	prctl(PR_SET_PDEATHSIG, SIGQUIT);
	if (getppid() != master)
		_exit(0);
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			logf_("cannot pin to CPU %d: %s", cpu, strerror(errno));
	}
	w.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	w.ep = epoll_create1(EPOLL_CLOEXEC);
	if (w.sigfd < 0 || w.ep < 0 || epoll_ctl(w.ep, EPOLL_CTL_ADD, w.sigfd, &ev)) {
		logf_("setup: %s", strerror(errno));
		_exit(1);
	}
	ret = spw_ring_open(group_fd, member);
	if (ret >= 0)
		ret = spw_ring_init(&w.ring, ret);
	if (ret < 0) {
		logf_("ring: %s", strerror(-ret));
		_exit(1);
	}
	close(group_fd);	/* the ring keeps the group alive */
	w.ring_open = true;
	spw_ring_set_accept_flags(&w.ring, SPW_ACCEPT_NONBLOCK | SPW_ACCEPT_CLOEXEC);
	if (owner)
		ring_take(&w);
	notify_master(&w, MSG_READY);
	logf_("ring open%s", owner ? "" : ", waiting for the hand-over");

	w.now = w.last_tick = now_ms();
	for (;;) {
		struct epoll_event evs[64];
		int n = epoll_wait(w.ep, evs, 64, TICK_MS);

		w.now = now_ms();
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;

			if (p == &w.sigfd) {
				worker_signals(&w);
			} else if (p == &w.ring) {
				/* a SIGQUIT earlier in this batch may have closed it */
				if (w.owner)
					ring_ready(&w);
			} else if (!((struct conn *)p)->dead) {
				conn_run(&w, p);
			}
		}
		if (w.now - w.last_tick >= TICK_MS) {
			worker_tick(&w);
			w.last_tick = w.now;
		}
		while (w.graveyard) {
			struct conn *c = w.graveyard;

			w.graveyard = c->next;
			free(c->out);
			free(c);
		}
		if (w.quitting && !w.nconns) {
			logf_("drained in %lld ms (%u idle and %u timed-out connections closed), "
			      "exiting after %llu requests", w.now - w.quit_at, w.idle_closed,
			      w.timed_out, __atomic_load_n(&slot->requests, __ATOMIC_RELAXED));
			_exit(0);
		}
	}
}

/* ------------------------------------------------------------------ */
/* Master                                                              */
/* ------------------------------------------------------------------ */

/*
 * A worker's life as the master sees it: STARTING (forked) -> READY (ring
 * open, waiting for the hand-over) or SERVING (owns the ring) ->
 * QUIT_SENT (told to stop, still owns it) -> RELEASED (ring closed,
 * draining its connections) -> gone.
 */
enum { P_FREE, P_STARTING, P_READY, P_SERVING, P_QUIT_SENT, P_RELEASED };

struct proc {
	pid_t pid;
	int state;		/* P_* */
	unsigned member, gen;
	long long started;
};

struct member {
	int cur;		/* proc that enters and reaps the ring, -1: none */
	int next;		/* proc waiting to take it over, -1: none */
	unsigned backoff_ms;
	long long respawn_at;	/* no new worker before this */
	unsigned long long requests;	/* served by its workers that exited */
};

struct master {
	int group_fd, sigfd, pipe_rd, pipe_wr;
	unsigned nr, nprocs, gen;
	bool stopping;
	int *cpus;		/* -w auto: member -> CPU */
	struct member *m;
	struct proc *procs;
	struct slot *slots;	/* shared: one per procs[] entry */
	volatile int *shared_stopping;
};

static const char *const state_names[] = {
	"free", "starting", "ready", "serving", "quitting", "draining"
};

static int proc_find(struct master *ms, pid_t pid)
{
	for (unsigned i = 0; i < ms->nprocs; i++)
		if (ms->procs[i].state != P_FREE && ms->procs[i].pid == pid)
			return i;
	return -1;
}

/* Fork a worker for @member; it owns the ring at once if nobody else does. */
static int spawn(struct master *ms, unsigned member)
{
	struct member *m = &ms->m[member];
	bool owner = m->cur < 0;
	pid_t pid, self = getpid();
	unsigned i;

	for (i = 0; i < ms->nprocs && ms->procs[i].state != P_FREE; i++)
		;
	if (i == ms->nprocs)
		return -EAGAIN;	/* too many draining: retry on the next round */
	memset(&ms->slots[i], 0, sizeof(ms->slots[i]));
	pid = fork();
	if (pid < 0)
		return -errno;
	if (!pid) {
		close(ms->sigfd);
		close(ms->pipe_rd);
		worker_main(self, ms->group_fd, member, owner,
			    ms->cpus ? ms->cpus[member] : -1, ms->pipe_wr,
			    &ms->slots[i], ms->shared_stopping);
	}
	ms->procs[i] = (struct proc){ .pid = pid, .state = P_STARTING,
				      .member = member, .gen = ms->gen,
				      .started = now_ms() };
	if (owner)
		m->cur = i;
	else
		m->next = i;
	return 0;
}

/*
 * Bring every member towards "one worker of the current generation owns
 * the ring": start a new worker where needed (respecting the back-off),
 * retire the old owner once its successor has its ring open, and hand the
 * ring over once the old owner has let go.
 */
static void reconcile(struct master *ms)
{
	long long now = now_ms();

	for (unsigned i = 0; i < ms->nr && !ms->stopping; i++) {
		struct member *m = &ms->m[i];
		struct proc *cur = m->cur >= 0 ? &ms->procs[m->cur] : NULL;
		struct proc *next = m->next >= 0 ? &ms->procs[m->next] : NULL;

		if (!next && (!cur || cur->gen != ms->gen) && now >= m->respawn_at) {
			int ret = spawn(ms, i);

			if (ret) {
				logf_("member %u: cannot start a worker: %s", i, strerror(-ret));
				m->respawn_at = now + BACKOFF_MAX_MS;
			}
			continue;
		}
		if (!next || next->state != P_READY)
			continue;
		if (cur && cur->state != P_QUIT_SENT) {
			kill(cur->pid, SIGQUIT);
			cur->state = P_QUIT_SENT;
		} else if (!cur) {
			kill(next->pid, SIGUSR2);
			next->state = P_SERVING;
			m->cur = m->next;
			m->next = -1;
			logf_("member %u: ring handed over to pid %d", i, next->pid);
		}
	}
}

static void on_message(struct master *ms, const struct msg *msg)
{
	int i = proc_find(ms, msg->pid);
	struct member *m;

	if (i < 0 || msg->member >= ms->nr)
		return;
	m = &ms->m[msg->member];
	if (msg->type == MSG_READY && ms->procs[i].state == P_STARTING) {
		ms->procs[i].state = m->cur == i ? P_SERVING : P_READY;
	} else if (msg->type == MSG_RELEASED) {
		ms->procs[i].state = P_RELEASED;
		if (m->cur == i)
			m->cur = -1;
		if (m->next == i)
			m->next = -1;
	}
}

static void on_exit_status(struct master *ms, pid_t pid, int status)
{
	int i = proc_find(ms, pid);
	struct proc *p;
	struct member *m;
	long long now = now_ms(), lived;
	bool expected;

	if (i < 0)
		return;
	p = &ms->procs[i];
	m = &ms->m[p->member];
	lived = now - p->started;
	m->requests += __atomic_load_n(&ms->slots[i].requests, __ATOMIC_RELAXED);
	expected = ms->stopping || p->state == P_QUIT_SENT || p->state == P_RELEASED;
	if (WIFSIGNALED(status))
		logf_("worker %u pid %d (generation %u, %s) killed by signal %d after %lld ms",
		      p->member, pid, p->gen, state_names[p->state], WTERMSIG(status), lived);
	else
		logf_("worker %u pid %d (generation %u, %s) exited with status %d after %lld ms",
		      p->member, pid, p->gen, state_names[p->state], WEXITSTATUS(status), lived);
	if (m->cur == i)
		m->cur = -1;
	if (m->next == i)
		m->next = -1;
	p->state = P_FREE;
	if (expected)
		return;
	if (lived >= HEALTHY_MS)
		m->backoff_ms = BACKOFF_MIN_MS;
	m->respawn_at = now + m->backoff_ms;
	logf_("member %u: new worker in %u ms", p->member, m->backoff_ms);
	m->backoff_ms = m->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : m->backoff_ms * 2;
}

static void log_stats(struct master *ms)
{
	struct spw_member_stats *st = calloc(ms->nr, sizeof(*st));
	unsigned long long total = 0;
	struct spw_group_stats gs;
	int n;

	if (!st)
		return;
	n = spw_group_stats_full(ms->group_fd, &gs, st, ms->nr);
	if (n < 0)
		logf_("stats: %s", strerror(-n));
	for (int i = 0; i < n && i < (int)ms->nr; i++) {
		unsigned long long req = ms->m[i].requests;

		for (unsigned j = 0; j < ms->nprocs; j++)
			if (ms->procs[j].state != P_FREE && ms->procs[j].member == (unsigned)i)
				req += __atomic_load_n(&ms->slots[j].requests, __ATOMIC_RELAXED);
		total += req;
		logf_("stats member %d: arrived %llu delivered %llu spilled_in %llu spilled_out %llu "
		      "dropped %llu rehomed %llu outstanding %u requests %llu", i,
		      (unsigned long long)st[i].arrived, (unsigned long long)st[i].delivered,
		      (unsigned long long)st[i].spilled_in, (unsigned long long)st[i].spilled_out,
		      (unsigned long long)st[i].dropped, (unsigned long long)st[i].rehomed,
		      st[i].outstanding, req);
	}
	for (unsigned j = 0; j < ms->nprocs; j++)
		if (ms->procs[j].state != P_FREE)
			logf_("stats worker pid %d: member %u generation %u %s connections %llu requests %llu",
			      ms->procs[j].pid, ms->procs[j].member, ms->procs[j].gen,
			      state_names[ms->procs[j].state],
			      __atomic_load_n(&ms->slots[j].conns, __ATOMIC_RELAXED),
			      __atomic_load_n(&ms->slots[j].requests, __ATOMIC_RELAXED));
	if (n >= 0)
		logf_("stats total: arrived %llu delivered %llu dropped %llu stale %llu requests %llu",
		      (unsigned long long)gs.total.arrived, (unsigned long long)gs.total.delivered,
		      (unsigned long long)gs.total.dropped, (unsigned long long)gs.stale, total);
	free(st);
}

/* Graceful stop: every worker drains; the loop ends when none is left. */
static void stop_all(struct master *ms, int sig)
{
	ms->stopping = true;
	*ms->shared_stopping = 1;
	for (unsigned j = 0; j < ms->nprocs; j++)
		if (ms->procs[j].state != P_FREE)
			kill(ms->procs[j].pid, sig);
}

static bool on_signal(struct master *ms, const struct signalfd_siginfo *si)
{
	int status;
	pid_t pid;

	switch (si->ssi_signo) {
	case SIGCHLD:
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
			on_exit_status(ms, pid, status);
		break;
	case SIGHUP:
		if (ms->stopping)
			break;
		ms->gen++;
		status = log_open();
		if (status)
			logf_("cannot reopen %s: %s", log_path, strerror(-status));
		logf_("SIGHUP: reload, starting generation %u", ms->gen);
		for (unsigned i = 0; i < ms->nr; i++)
			ms->m[i].respawn_at = 0;
		break;
	case SIGQUIT:
		logf_("SIGQUIT: graceful stop");
		stop_all(ms, SIGQUIT);
		break;
	case SIGUSR1:
		log_stats(ms);
		break;
	case SIGTERM:
	case SIGINT:
		logf_("signal %d: fast stop", si->ssi_signo);
		stop_all(ms, SIGTERM);
		while (wait(NULL) > 0)
			;
		return true;
	}
	return false;
}

static bool any_proc(const struct master *ms)
{
	for (unsigned j = 0; j < ms->nprocs; j++)
		if (ms->procs[j].state != P_FREE)
			return true;
	return false;
}

static void master_loop(struct master *ms)
{
	for (;;) {
		struct pollfd pfd[2] = { { ms->sigfd, POLLIN, 0 }, { ms->pipe_rd, POLLIN, 0 } };
		long long now = now_ms(), wake = -1;
		struct signalfd_siginfo si;
		struct msg msgs[32];
		ssize_t n;

		reconcile(ms);
		if (ms->stopping && !any_proc(ms))
			return;
		for (unsigned i = 0; i < ms->nr && !ms->stopping; i++)
			if (ms->m[i].respawn_at > now &&
			    (wake < 0 || ms->m[i].respawn_at - now < wake))
				wake = ms->m[i].respawn_at - now;
		if (poll(pfd, 2, wake) < 0 && errno != EINTR)
			logf_("poll: %s", strerror(errno));
		while (read(ms->sigfd, &si, sizeof(si)) == sizeof(si))
			if (on_signal(ms, &si))
				return;
		while ((n = read(ms->pipe_rd, msgs, sizeof(msgs))) > 0)
			for (ssize_t k = 0; k < n / (ssize_t)sizeof(msgs[0]); k++)
				on_message(ms, &msgs[k]);
	}
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */
/* ------------------------------------------------------------------ */

static void __attribute__((noreturn)) usage(const char *prog, int status)
{
	fprintf(status ? stderr : stdout,
		"usage: %s [-p PORT] [-a ADDR] [-w N|auto] [-e ENTRIES] [-P POLICY]\n"
		"          [-s STALL_MS|off] [-l LOGFILE] [-h]\n"
		"  -p PORT     TCP port (default 8080; 0: any, logged)\n"
		"  -a ADDR     IPv4 or IPv6 address (default 0.0.0.0)\n"
		"  -w N|auto   workers (default 4); auto: one per CPU, pinned\n"
		"  -e ENTRIES  ring entries per worker (power of two; default: the module's)\n"
		"  -P POLICY   origin|least|p2c|cpu (default: the module's, p2c)\n"
		"  -s MS|off   stall time (default: the module's)\n"
		"  -l LOGFILE  log here instead of stderr (reopened on SIGHUP)\n"
		"signals to the master: HUP reload, QUIT graceful stop, TERM/INT fast stop,\n"
		"USR1 log counters\n", prog);
	exit(status);
}

static unsigned long parse_num(const char *s, unsigned long max, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max || *s == '-') {
		fprintf(stderr, "spwd: bad %s '%s'\n", what, s);
		exit(2);
	}
	return v;
}

/* -w auto: one member per CPU this process may run on, in CPU order. */
static unsigned auto_cpus(int **cpus)
{
	cpu_set_t set;
	unsigned n = 0;

	if (sched_getaffinity(0, sizeof(set), &set)) {
		perror("spwd: sched_getaffinity");
		exit(1);
	}
	*cpus = calloc(CPU_COUNT(&set), sizeof(int));
	for (int c = 0; *cpus && c < CPU_SETSIZE && n < SPW_MAX_MEMBERS; c++)
		if (CPU_ISSET(c, &set))
			(*cpus)[n++] = c;
	return n;
}

int main(int argc, char **argv)
{
	static const char *const policies[] = { "default", "origin", "least", "p2c", "cpu" };
	struct spw_group_params params = { 0 };
	struct master ms = { .nr = 4 };
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *sin = (void *)&ss;
	struct sockaddr_in6 *sin6 = (void *)&ss;
	const char *addr = "0.0.0.0";
	unsigned port = 8080;
	char host[INET6_ADDRSTRLEN];
	socklen_t sslen;
	sigset_t mask;
	void *shm;
	int opt, fds[2], lfd;

	while ((opt = getopt(argc, argv, "p:a:w:e:P:s:l:h")) != -1) {
		switch (opt) {
		case 'p':
			port = parse_num(optarg, 65535, "port");
			break;
		case 'a':
			addr = optarg;
			break;
		case 'w':
			if (!strcmp(optarg, "auto"))
				ms.nr = auto_cpus(&ms.cpus);
			else
				ms.nr = parse_num(optarg, SPW_MAX_MEMBERS, "worker count");
			break;
		case 'e':
			params.ring_entries = parse_num(optarg, SPW_MAX_RING_ENTRIES, "ring size");
			break;
		case 'P':
			for (params.policy = 1; params.policy <= SPW_POLICY_MAX; params.policy++)
				if (!strcmp(optarg, policies[params.policy]))
					break;
			if (params.policy > SPW_POLICY_MAX) {
				fprintf(stderr, "spwd: unknown policy '%s'\n", optarg);
				return 2;
			}
			break;
		case 's':
			params.stall_ms = strcmp(optarg, "off") ?
				parse_num(optarg, 3600000, "stall time") : SPW_STALL_OFF;
			break;
		case 'l':
			log_path = optarg;
			break;
		case 'h':
			usage(argv[0], 0);
		default:
			usage(argv[0], 2);
		}
	}
	if (optind != argc || !ms.nr)
		usage(argv[0], 2);
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sslen = sizeof(*sin);
	} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sslen = sizeof(*sin6);
	} else {
		fprintf(stderr, "spwd: '%s' is not an IPv4 or IPv6 address\n", addr);
		return 2;
	}
	opt = log_open();
	if (opt) {
		fprintf(stderr, "spwd: %s: %s\n", log_path, strerror(-opt));
		return 1;
	}

	/* at most two workers per member at once, and some draining */
	ms.nprocs = 4 * ms.nr;
	ms.m = calloc(ms.nr, sizeof(*ms.m));
	ms.procs = calloc(ms.nprocs, sizeof(*ms.procs));
	shm = mmap(NULL, sizeof(int) + 64 + ms.nprocs * sizeof(struct slot),
		   PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!ms.m || !ms.procs || shm == MAP_FAILED) {
		fprintf(stderr, "spwd: out of memory\n");
		return 1;
	}
	ms.shared_stopping = shm;
	ms.slots = (struct slot *)((char *)shm + 64);
	for (unsigned i = 0; i < ms.nr; i++)
		ms.m[i] = (struct member){ .cur = -1, .next = -1,
					   .backoff_ms = BACKOFF_MIN_MS };

	ms.group_fd = spw_group_listen((struct sockaddr *)&ss, sslen, ms.nr, BACKLOG, &params);
	if (ms.group_fd < 0) {
		logf_("spw_group_listen %s port %u: %s (is the module loaded?)", addr, port,
		      strerror(-ms.group_fd));
		return 1;
	}
	/* the port the kernel chose, if we asked for 0 */
	lfd = spw_member_listener(ms.group_fd, 0);
	sslen = sizeof(ss);
	if (lfd < 0 || getsockname(lfd, (struct sockaddr *)&ss, &sslen)) {
		logf_("member listener: %s", strerror(lfd < 0 ? -lfd : errno));
		return 1;
	}
	close(lfd);
	inet_ntop(ss.ss_family, ss.ss_family == AF_INET ? (void *)&sin->sin_addr :
		  (void *)&sin6->sin6_addr, host, sizeof(host));
	port = ntohs(ss.ss_family == AF_INET ? sin->sin_port : sin6->sin6_port);

	/* signals arrive through signalfd; workers inherit QUIT/USR2 blocked */
	sigemptyset(&mask);
	for (int s = 0, sigs[] = { SIGCHLD, SIGHUP, SIGQUIT, SIGTERM, SIGINT,
				   SIGUSR1, SIGUSR2 }; s < 7; s++)
		sigaddset(&mask, sigs[s]);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	ms.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (ms.sigfd < 0 || pipe2(fds, O_CLOEXEC)) {
		logf_("setup: %s", strerror(errno));
		return 1;
	}
	ms.pipe_rd = fds[0];
	ms.pipe_wr = fds[1];
	fcntl(ms.pipe_rd, F_SETFL, O_NONBLOCK);

	logf_("pid %d: %u workers on %s%s%s port %u, policy %s", getpid(), ms.nr,
	      ss.ss_family == AF_INET6 ? "[" : "", host,
	      ss.ss_family == AF_INET6 ? "]" : "", port, policies[params.policy]);
	master_loop(&ms);
	close(ms.group_fd);
	logf_("stopped");
	return 0;
}
