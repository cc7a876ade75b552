// SPDX-License-Identifier: MIT
/*
 * spw-loadgen: connection-rate load generator for spw-bench-server.
 *
 * Each connection: non-blocking connect() to 127.0.0.1:PORT, send the
 * request "GET\n" once connected, wait for the one-line response
 * "w<index>\n", close with an RST (SO_LINGER 0, so no TIME_WAIT piles up on
 * the client side). One thread, epoll.
 *
 * --http (for a real HTTP server, bench/run's nginx modes): the request is
 * "GET / HTTP/1.1" with "Connection: close", and a connection is answered
 * when the whole response is in (headers, then Content-Length bytes of
 * body, or the body up to EOF without one); only a 200 counts as answered.
 * The body is the serving worker's pid (nginx: return 200 "$pid\n"), which
 * --pid-file's "worker I PID GEN" lines map to the worker index.
 *
 * Open loop (--rate R > 0): connection i is scheduled at t0 + i/R and its
 * latency is measured from that *scheduled* time, so a stalled server or a
 * full concurrency window shows up as latency instead of being hidden
 * (coordinated omission, as wrk2 does it). Closed loop (--rate 0): keep
 * --concurrency connections in flight for --duration seconds; latency is
 * measured from the actual start.
 *
 * Failure kinds: reset (ECONNRESET/EPIPE), refused (ECONNREFUSED),
 * timeout (no response --timeout-ms after its scheduled start),
 * eof (orderly close before a response), other (anything else, e.g.
 * EADDRNOTAVAIL). Nothing is averaged away: --records writes one CSV row
 * per connection, --out writes a JSON summary with exact percentiles over
 * every scheduled connection (a failed one counts as an infinite latency:
 * "latency_all_ms") and over the answered ones only ("latency_ms"), a CDF
 * and a 100 ms timeline.
 *
 * Actions (--action, with --pid-file) run on this program's own clock, so
 * a SIGSTOP/SIGCONT/SIGKILL of a server worker lands at a known point of
 * the schedule; the JSON records when each signal was actually sent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define REQUEST		"GET\n"
#define HTTP_REQUEST	"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
#define HTTP_BUF	1024	/* per connection: nginx's answer is ~160 bytes */
#define START_BATCH	32	/* connects between two looks at the events */
#define MAX_RECORDS	4000000u	/* hard bound on connections per run */
#define MAX_WORKER_ID	1024
#define MAX_DURATION_S	3600.0
#define TIMELINE_BIN_NS	100000000ull	/* 100 ms */
#define MAX_ACTIONS	16

enum status { ST_PENDING, ST_OK, ST_RESET, ST_REFUSED, ST_TIMEOUT, ST_EOF, ST_OTHER, ST__NR };
static const char *const status_names[ST__NR] = {
	"pending", "ok", "reset", "refused", "timeout", "eof", "other"
};

struct rec {
	uint64_t sched;		/* ns after t0 */
	uint64_t start;		/* ns after t0: socket()+connect() */
	uint64_t conn;		/* ns after t0: connect completed, 0 if never */
	uint64_t done;		/* ns after t0: response / failure */
	int32_t worker;		/* from the response, -1 if none */
	uint8_t status;
	uint8_t pad;
	uint16_t err;		/* errno of a failure */
};

struct slot {
	int fd;
	uint32_t gen;
	uint32_t rec;		/* index into recs */
	int prev, next;		/* in-flight list, in start order */
	bool connected;
	uint8_t len;
	char buf[32];
};

/* A timed signal to a server worker, found by index in the pid file. */
struct action {
	enum { A_STOP, A_KILL } kind;
	int worker;
	uint64_t at;		/* ns after t0 */
	uint64_t len;		/* stop: ns until SIGCONT */
	/* what happened */
	int pid;		/* 0: not (yet) sent */
	uint64_t t_sent;	/* ns after t0 */
	uint64_t t_cont;	/* ns after t0, 0: SIGCONT not sent yet */
	char error[96];
};

static struct action actions[MAX_ACTIONS];
static int nr_actions;

static struct {
	int port;
	double rate;
	double duration;
	uint64_t count;
	int concurrency;
	long timeout_ms;
	const char *out;
	const char *records;
	const char *pid_file;
	int workers;
	bool quiet;
	bool http;
} o = {
	.port = 0,
	.rate = 0,
	.duration = 5,
	.count = 0,
	.concurrency = 64,
	.timeout_ms = 10000,
	.workers = 0,
};

static struct rec *recs;
static uint64_t nrecs, caprecs;
static struct slot *slots;
static int free_head = -1;	/* free list through .next */
static int act_head = -1, act_tail = -1;
static int inflight;
static int ep;
static uint64_t t0;
static struct sockaddr_in dst;
static volatile sig_atomic_t interrupted;
static const char *request = REQUEST;
static size_t request_len = sizeof(REQUEST) - 1;
/* --http: a response buffer per slot, and the pid -> worker index map */
static char *http_bufs;
static uint16_t *http_lens;
static struct { int pid, index; } pidmap[MAX_WORKER_ID];
static int nr_pidmap;
static struct timespec pidmap_mtime;
static uint64_t http_unmapped, http_non200;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "spw-loadgen: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static struct rec *new_rec(uint64_t sched)
{
	struct rec *r;

	if (nrecs == caprecs) {
		uint64_t n = caprecs ? caprecs * 2 : 65536;

		if (n > MAX_RECORDS)
			n = MAX_RECORDS;
		if (n <= caprecs)
			return NULL;
		recs = realloc(recs, n * sizeof(*recs));
		if (!recs)
			die("out of memory for %" PRIu64 " records", n);
		caprecs = n;
	}
	r = &recs[nrecs++];
	memset(r, 0, sizeof(*r));
	r->sched = sched;
	r->worker = -1;
	return r;
}

static void list_del(int s)
{
	struct slot *sl = &slots[s];

	if (sl->prev >= 0)
		slots[sl->prev].next = sl->next;
	else
		act_head = sl->next;
	if (sl->next >= 0)
		slots[sl->next].prev = sl->prev;
	else
		act_tail = sl->prev;
}

static void list_add_tail(int s)
{
	slots[s].prev = act_tail;
	slots[s].next = -1;
	if (act_tail >= 0)
		slots[act_tail].next = s;
	else
		act_head = s;
	act_tail = s;
}

static void finish(int s, enum status st, int err, int worker)
{
	struct slot *sl = &slots[s];
	struct rec *r = &recs[sl->rec];

	r->done = now_ns() - t0;
	r->status = (uint8_t)st;
	r->err = (uint16_t)err;
	r->worker = worker;
	if (sl->fd >= 0)
		close(sl->fd);	/* SO_LINGER 0: RST, no TIME_WAIT */
	sl->fd = -1;
	sl->gen++;
	list_del(s);
	sl->next = free_head;
	free_head = s;
	inflight--;
}

static enum status classify(int err)
{
	switch (err) {
	case ECONNRESET:
	case EPIPE:
		return ST_RESET;
	case ECONNREFUSED:
		return ST_REFUSED;
	case ETIMEDOUT:
		return ST_TIMEOUT;
	default:
		return ST_OTHER;
	}
}

/* Start the connection for a new record scheduled at @sched. */
static void start_conn(uint64_t sched)
{
	static const struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct epoll_event ev;
	struct rec *r = new_rec(sched);
	struct slot *sl;
	int s, fd;

	if (!r)
		return;
	r->start = now_ns() - t0;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r->done = r->start;
		r->status = ST_OTHER;
		r->err = (uint16_t)errno;
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));

	s = free_head;
	sl = &slots[s];
	free_head = sl->next;
	sl->fd = fd;
	sl->rec = (uint32_t)(r - recs);
	sl->connected = false;
	sl->len = 0;
	if (http_lens)
		http_lens[s] = 0;
	list_add_tail(s);
	inflight++;

	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
		int err = errno;

		finish(s, classify(err), err, -1);
		return;
	}
	ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
	ev.data.u64 = ((uint64_t)sl->gen << 32) | (uint32_t)s;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = errno;

		finish(s, ST_OTHER, err, -1);
	}
}

/* ---------------------------------------------------------------- */
/* actions                                                            */

/* "stop@AT:WORKER:LEN" or "kill@AT:WORKER", AT and LEN in seconds. */
static void parse_action(const char *spec)
{
	struct action *a;
	double at, len = 0;
	int w, n = 0;

	if (nr_actions == MAX_ACTIONS)
		die("at most %d --action", MAX_ACTIONS);
	a = &actions[nr_actions];
	memset(a, 0, sizeof(*a));
	if (sscanf(spec, "stop@%lf:%d:%lf%n", &at, &w, &len, &n) == 3 && !spec[n]) {
		a->kind = A_STOP;
	} else if (sscanf(spec, "kill@%lf:%d%n", &at, &w, &n) == 2 && !spec[n]) {
		a->kind = A_KILL;
	} else {
		die("bad --action '%s' (stop@AT:WORKER:LEN or kill@AT:WORKER)", spec);
	}
	if (!(at >= 0) || at > MAX_DURATION_S || !(len >= 0) || len > MAX_DURATION_S ||
	    w < 0 || w >= MAX_WORKER_ID)
		die("bad --action '%s'", spec);
	a->worker = w;
	a->at = (uint64_t)(at * 1e9);
	a->len = (uint64_t)(len * 1e9);
	nr_actions++;
}

/* The current pid of worker @w from the server's pid file, or 0. */
static int worker_pid(int w, char *err, size_t errlen)
{
	char line[128];
	int pid = 0;
	FILE *f = fopen(o.pid_file, "re");

	if (!f) {
		snprintf(err, errlen, "%s: %s", o.pid_file, strerror(errno));
		return 0;
	}
	while (fgets(line, sizeof(line), f)) {
		int i, p, gen;

		if (sscanf(line, "worker %d %d %d", &i, &p, &gen) == 3 && i == w)
			pid = p;
	}
	fclose(f);
	if (pid <= 0)
		snprintf(err, errlen, "no pid for worker %d in %s", w, o.pid_file);
	return pid;
}

/*
 * --http: (re)read the pid file's "worker I PID GEN" lines into the pid ->
 * index map, if the file changed since the last read. Called at start and
 * when a response names a pid that is not in the map (a respawned worker).
 */
static void load_pidmap(void)
{
	char line[128];
	struct stat st;
	FILE *f;

	if (!o.pid_file || stat(o.pid_file, &st) < 0)
		return;
	if (nr_pidmap && st.st_mtim.tv_sec == pidmap_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == pidmap_mtime.tv_nsec)
		return;
	f = fopen(o.pid_file, "re");
	if (!f)
		return;
	pidmap_mtime = st.st_mtim;
	nr_pidmap = 0;
	while (fgets(line, sizeof(line), f) && nr_pidmap < MAX_WORKER_ID) {
		int i, p, gen;

		if (sscanf(line, "worker %d %d %d", &i, &p, &gen) == 3 && i >= 0 &&
		    i < MAX_WORKER_ID && p > 0) {
			pidmap[nr_pidmap].pid = p;
			pidmap[nr_pidmap].index = i;
			nr_pidmap++;
		}
	}
	fclose(f);
}

static int pid_index(int pid)
{
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < nr_pidmap; i++)
			if (pidmap[i].pid == pid)
				return pidmap[i].index;
		if (!pass)
			load_pidmap();
	}
	return -1;
}

/*
 * Send what is due at @rel; returns the ns until the next signal is due
 * (INT64_MAX: none). The time recorded is taken right after kill().
 */
static int64_t run_actions(uint64_t rel)
{
	int64_t next = INT64_MAX;

	for (int i = 0; i < nr_actions; i++) {
		struct action *a = &actions[i];
		uint64_t due;

		if (!a->pid && !a->error[0]) {
			if (a->at > rel) {
				due = a->at;
				goto later;
			}
			a->pid = worker_pid(a->worker, a->error, sizeof(a->error));
			if (!a->pid)
				continue;
			if (kill(a->pid, a->kind == A_STOP ? SIGSTOP : SIGKILL) < 0) {
				snprintf(a->error, sizeof(a->error), "kill(%d): %s", a->pid,
					 strerror(errno));
				continue;
			}
			a->t_sent = now_ns() - t0;
		}
		if (a->kind != A_STOP || !a->pid || a->t_cont || a->error[0])
			continue;
		if (a->t_sent + a->len > rel) {
			due = a->t_sent + a->len;
			goto later;
		}
		kill(a->pid, SIGCONT);
		a->t_cont = now_ns() - t0;
		continue;
later:
		if ((int64_t)(due - rel) < next)
			next = (int64_t)(due - rel);
	}
	return next;
}

/* A stopped worker must not stay stopped when we end early. */
static void cont_stopped(void)
{
	for (int i = 0; i < nr_actions; i++) {
		struct action *a = &actions[i];

		if (a->kind == A_STOP && a->pid && !a->t_cont && !a->error[0]) {
			kill(a->pid, SIGCONT);
			a->t_cont = now_ns() - t0;
		}
	}
}

static void json_actions(FILE *f)
{
	fprintf(f, " \"actions\": [");
	for (int i = 0; i < nr_actions; i++) {
		const struct action *a = &actions[i];

		fprintf(f, "%s{\"action\": \"%s\", \"worker\": %d, \"at_s\": %.3f",
			i ? ", " : "", a->kind == A_STOP ? "stop" : "kill", a->worker, a->at / 1e9);
		if (a->kind == A_STOP)
			fprintf(f, ", \"length_s\": %.3f", a->len / 1e9);
		fprintf(f, ", \"pid\": %d, \"done\": %s", a->pid,
			a->pid && a->t_sent && !a->error[0] ? "true" : "false");
		if (a->t_sent)
			fprintf(f, ", \"t_s\": %.6f", a->t_sent / 1e9);
		if (a->t_cont)
			fprintf(f, ", \"t_cont_s\": %.6f", a->t_cont / 1e9);
		if (a->error[0])
			fprintf(f, ", \"error\": \"%s\"", a->error);
		fprintf(f, "}");
	}
	fprintf(f, "],\n");
}

static int parse_worker(const char *buf, int len)
{
	long v;
	char *end;

	if (len < 2 || buf[0] != 'w')
		return -2;
	v = strtol(buf + 1, &end, 10);
	if (end == buf + 1 || *end != '\n' || v < 0 || v >= MAX_WORKER_ID)
		return -2;
	return (int)v;
}

/* the value of header @name ("content-length:", any case) in @h..@end */
static const char *find_header(const char *h, const char *end, const char *name)
{
	size_t nl = strlen(name);

	for (const char *p = h; p && p + nl <= end; ) {
		if (!strncasecmp(p, name, nl))
			return p + nl;
		p = memchr(p, '\n', (size_t)(end - p));
		if (p)
			p++;
	}
	return NULL;
}

/*
 * --http: the response so far in @buf[@len] (NUL-terminated). Returns 0
 * while incomplete, 1 when complete (@worker set, -1 when the body names
 * no known worker), -1 for a response that is not a 200 or does not parse.
 * @eof: the server closed, so a body without Content-Length is complete.
 */
static int http_parse(const char *buf, size_t len, bool eof, int *worker)
{
	const char *hend = strstr(buf, "\r\n\r\n"), *cl, *body;
	size_t need;
	long pid;
	char *e;

	if (!hend)
		return 0;
	if (strncmp(buf, "HTTP/1.", 7) || len < 12 || strncmp(buf + 8, " 200", 4)) {
		http_non200++;
		return -1;
	}
	body = hend + 4;
	cl = find_header(buf, hend, "content-length:");
	if (cl) {
		unsigned long n = strtoul(cl, &e, 10);

		if (e == cl || n > HTTP_BUF)
			return -1;
		need = (size_t)(body - buf) + n;
		if (len < need)
			return 0;
	} else if (!eof) {
		return 0;
	}
	pid = strtol(body, &e, 10);
	*worker = (e != body && pid > 0 && pid < INT32_MAX) ? pid_index((int)pid) : -1;
	if (*worker < 0)
		http_unmapped++;
	return 1;
}

/* --http: read what is there; finish the connection once the answer is in */
static void http_recv(int s)
{
	struct slot *sl = &slots[s];
	char *buf = http_bufs + (size_t)s * HTTP_BUF;
	int w = -1, r;

	for (;;) {
		ssize_t n = recv(sl->fd, buf + http_lens[s], HTTP_BUF - 1 - http_lens[s], 0);

		if (n > 0) {
			http_lens[s] = (uint16_t)(http_lens[s] + n);
			buf[http_lens[s]] = '\0';
			r = http_parse(buf, http_lens[s], false, &w);
			if (r) {
				finish(s, r > 0 ? ST_OK : ST_OTHER, r > 0 ? 0 : EPROTO, w);
				return;
			}
			if (http_lens[s] >= HTTP_BUF - 1) {
				finish(s, ST_OTHER, EPROTO, -1);
				return;
			}
			continue;
		}
		if (n == 0) {
			r = http_parse(buf, http_lens[s], true, &w);
			if (r)
				finish(s, r > 0 ? ST_OK : ST_OTHER, r > 0 ? 0 : EPROTO, w);
			else
				finish(s, ST_EOF, 0, -1);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		finish(s, classify(errno), errno, -1);
		return;
	}
}

static void on_event(uint64_t data, uint32_t events)
{
	int s = (int)(uint32_t)data;
	struct slot *sl = &slots[s];

	if ((uint32_t)(data >> 32) != sl->gen || sl->fd < 0)
		return;	/* stale */

	if (!sl->connected) {
		int err = 0;
		socklen_t el = sizeof(err);

		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLIN | EPOLLRDHUP)))
			return;
		if (getsockopt(sl->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
			err = errno;
		if (err) {
			finish(s, classify(err), err, -1);
			return;
		}
		if (!(events & EPOLLOUT) && !(events & EPOLLIN))
			return;
		sl->connected = true;
		recs[sl->rec].conn = now_ns() - t0;
		if (send(sl->fd, request, request_len, MSG_NOSIGNAL) != (ssize_t)request_len) {
			finish(s, classify(errno), errno, -1);
			return;
		}
		if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))) {
			struct epoll_event ev = {
				.events = EPOLLIN | EPOLLRDHUP,
				.data.u64 = data,
			};

			if (epoll_ctl(ep, EPOLL_CTL_MOD, sl->fd, &ev) < 0)
				finish(s, ST_OTHER, errno, -1);
			return;
		}
	}

	if (o.http) {
		http_recv(s);
		return;
	}
	for (;;) {
		ssize_t n = recv(sl->fd, sl->buf + sl->len, sizeof(sl->buf) - 1 - sl->len, 0);

		if (n > 0) {
			char *nl;

			sl->len = (uint8_t)(sl->len + n);
			sl->buf[sl->len] = '\0';
			nl = memchr(sl->buf, '\n', sl->len);
			if (nl) {
				int w = parse_worker(sl->buf, (int)(nl - sl->buf + 1));

				if (w < 0)
					finish(s, ST_OTHER, EPROTO, -1);
				else
					finish(s, ST_OK, 0, w);
				return;
			}
			if (sl->len >= sizeof(sl->buf) - 1) {
				finish(s, ST_OTHER, EPROTO, -1);
				return;
			}
			continue;
		}
		if (n == 0) {
			finish(s, ST_EOF, 0, -1);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		finish(s, classify(errno), errno, -1);
		return;
	}
}

static int epoll_wait_ns(struct epoll_event *evs, int max, int64_t timeout_ns)
{
#ifdef SYS_epoll_pwait2
	static bool no_pwait2;

	if (!no_pwait2) {
		struct timespec ts = { timeout_ns / 1000000000, timeout_ns % 1000000000 };
		long n = syscall(SYS_epoll_pwait2, ep, evs, max, &ts, NULL, (size_t)8);

		if (n >= 0 || errno != ENOSYS)
			return (int)n;
		no_pwait2 = true;
	}
#endif
	return epoll_wait(ep, evs, max, (int)((timeout_ns + 999999) / 1000000));
}

/* ---------------------------------------------------------------- */
/* output                                                             */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* nearest-rank percentile of sorted @v[n] */
static uint64_t pct(const uint64_t *v, uint64_t n, double q)
{
	uint64_t k;

	if (!n)
		return 0;
	k = (uint64_t)ceil(q * (double)n);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1];
}

static void json_dist(FILE *f, const char *name, const uint64_t *v, uint64_t n)
{
	double sum = 0;

	for (uint64_t i = 0; i < n; i++)
		sum += (double)v[i];
	if (!n) {
		fprintf(f, "\"%s\": null", name);
		return;
	}
	fprintf(f, "\"%s\": {\"n\": %" PRIu64 ", \"min\": %.3f, \"p50\": %.3f, \"p90\": %.3f, "
		"\"p99\": %.3f, \"p999\": %.3f, \"p9999\": %.3f, \"max\": %.3f, \"mean\": %.3f}",
		name, n, v[0] / 1e6, pct(v, n, 0.5) / 1e6, pct(v, n, 0.9) / 1e6,
		pct(v, n, 0.99) / 1e6, pct(v, n, 0.999) / 1e6, pct(v, n, 0.9999) / 1e6,
		v[n - 1] / 1e6, sum / (double)n / 1e6);
}

/* A percentile in ms, or the string "inf" for a failed connection. */
static void json_ms_or_inf(FILE *f, const char *k, uint64_t v, bool comma)
{
	if (v == UINT64_MAX)
		fprintf(f, "\"%s\": \"inf\"%s", k, comma ? ", " : "");
	else
		fprintf(f, "\"%s\": %.3f%s", k, v / 1e6, comma ? ", " : "");
}

/* Over every settled connection, a failure being UINT64_MAX (+inf). */
static void json_dist_all(FILE *f, const char *name, const uint64_t *v, uint64_t n,
			  uint64_t failed)
{
	if (!n) {
		fprintf(f, "\"%s\": null", name);
		return;
	}
	fprintf(f, "\"%s\": {\"n\": %" PRIu64 ", \"failed\": %" PRIu64 ", ", name, n, failed);
	json_ms_or_inf(f, "p50", pct(v, n, 0.5), true);
	json_ms_or_inf(f, "p90", pct(v, n, 0.9), true);
	json_ms_or_inf(f, "p99", pct(v, n, 0.99), true);
	json_ms_or_inf(f, "p999", pct(v, n, 0.999), true);
	json_ms_or_inf(f, "max", v[n - 1], false);
	fprintf(f, "}");
}

static void write_records(const char *path)
{
	FILE *f = fopen(path, "we");

	if (!f)
		die("%s: %s", path, strerror(errno));
	fprintf(f, "idx,sched_us,start_us,connect_us,done_us,latency_us,worker,status,errno\n");
	for (uint64_t i = 0; i < nrecs; i++) {
		const struct rec *r = &recs[i];

		fprintf(f, "%" PRIu64 ",%.1f,%.1f,%.1f,%.1f,%.1f,%d,%s,%u\n", i,
			r->sched / 1e3, r->start / 1e3, r->conn ? r->conn / 1e3 : -1.0,
			r->done / 1e3, (r->done - r->sched) / 1e3, r->worker,
			status_names[r->status], r->err);
	}
	if (fclose(f) != 0)
		die("writing %s: %s", path, strerror(errno));
}

static void write_summary(const char *path, uint64_t t_load_end, uint64_t t_end)
{
	uint64_t counts[ST__NR] = { 0 };
	uint64_t *lat, *svc, *con, *all, nok = 0, ncon = 0, nall = 0, over1 = 0, over3 = 0;
	uint64_t late = 0, max_lag = 0, last_done = 0, nbins;
	uint64_t per_worker[MAX_WORKER_ID] = { 0 };
	int max_w = o.workers - 1;
	FILE *f;

	lat = malloc((nrecs + 1) * sizeof(*lat));
	svc = malloc((nrecs + 1) * sizeof(*svc));
	con = malloc((nrecs + 1) * sizeof(*con));
	all = malloc((nrecs + 1) * sizeof(*all));
	if (!lat || !svc || !con || !all)
		die("out of memory");
	for (uint64_t i = 0; i < nrecs; i++) {
		const struct rec *r = &recs[i];
		uint64_t lag = r->start > r->sched ? r->start - r->sched : 0;

		counts[r->status]++;
		if (lag > 1000000)
			late++;
		if (lag > max_lag)
			max_lag = lag;
		if (r->conn)
			con[ncon++] = r->conn - r->start;
		if (r->status != ST_PENDING)
			all[nall++] = r->status == ST_OK ? r->done - r->sched : UINT64_MAX;
		if (r->status != ST_OK)
			continue;
		lat[nok] = r->done - r->sched;
		svc[nok] = r->done - r->start;
		if (lat[nok] > 1000000000ull)
			over1++;
		if (lat[nok] > 3000000000ull)
			over3++;
		if (r->done > last_done)
			last_done = r->done;
		nok++;
		if (r->worker >= 0 && r->worker < MAX_WORKER_ID) {
			per_worker[r->worker]++;
			if (r->worker > max_w)
				max_w = r->worker;
		}
	}
	qsort(lat, nok, sizeof(*lat), cmp_u64);
	qsort(svc, nok, sizeof(*svc), cmp_u64);
	qsort(con, ncon, sizeof(*con), cmp_u64);
	qsort(all, nall, sizeof(*all), cmp_u64);

	f = fopen(path, "we");
	if (!f)
		die("%s: %s", path, strerror(errno));
	fprintf(f, "{\"port\": %d, \"loop\": \"%s\", \"rate\": %g, \"duration_s\": %g, "
		"\"count_limit\": %" PRIu64 ", \"concurrency\": %d, \"timeout_ms\": %ld, "
		"\"interrupted\": %s,\n",
		o.port, o.rate > 0 ? "open" : "closed", o.rate, o.duration, o.count,
		o.concurrency, o.timeout_ms, interrupted ? "true" : "false");
	fprintf(f, " \"protocol\": \"%s\", ", o.http ? "http" : "line");
	if (o.http)
		fprintf(f, "\"http_non200\": %" PRIu64 ", \"http_unmapped_worker\": %" PRIu64 ", ",
			http_non200, http_unmapped);
	fprintf(f, "\"connections\": %" PRIu64 ", \"completed\": %" PRIu64 ", ", nrecs, nok);
	fprintf(f, "\"failed\": {");
	for (int k = ST_RESET; k < ST__NR; k++)
		fprintf(f, "%s\"%s\": %" PRIu64, k > ST_RESET ? ", " : "", status_names[k], counts[k]);
	fprintf(f, ", \"total\": %" PRIu64 "},\n", nrecs - nok - counts[ST_PENDING]);
	fprintf(f, " \"load_window_s\": %.6f, \"elapsed_s\": %.6f, \"last_completion_s\": %.6f, ",
		t_load_end / 1e9, t_end / 1e9, last_done / 1e9);
	fprintf(f, "\"conn_per_s\": %.1f, ", last_done ? nok / (last_done / 1e9) : 0.0);
	fprintf(f, "\"late_starts\": %" PRIu64 ", \"max_start_lag_ms\": %.3f,\n", late, max_lag / 1e6);
	fprintf(f, " \"over_1s\": %" PRIu64 ", \"over_3s\": %" PRIu64 ",\n", over1, over3);
	json_actions(f);
	fprintf(f, " ");
	json_dist_all(f, "latency_all_ms", all, nall, nall - nok);
	fprintf(f, ",\n ");
	json_dist(f, "latency_ms", lat, nok);
	fprintf(f, ",\n ");
	json_dist(f, "service_ms", svc, nok);
	fprintf(f, ",\n ");
	json_dist(f, "connect_ms", con, ncon);
	fprintf(f, ",\n \"per_worker\": [");
	for (int w = 0; w <= max_w; w++)
		fprintf(f, "%s%" PRIu64, w ? ", " : "", per_worker[w]);
	fprintf(f, "],\n");

	/* CDF: a fixed body grid plus log-spaced tail points, then the max */
	fprintf(f, " \"cdf_ms\": [");
	if (nok) {
		uint64_t prev_k = 0;
		bool first = true;
		double tail_max = log10((double)nok) * 50.0;

		for (int step = 0;; step++) {
			double q;
			uint64_t k;

			if (step <= 100)
				q = step / 100.0 * 0.9;
			else if (step - 100 <= tail_max)
				q = 1.0 - 0.1 * pow(10.0, -(step - 100) / 50.0);
			else
				q = 1.0;
			k = (uint64_t)ceil(q * (double)nok);
			if (k < 1)
				k = 1;
			if (k > nok)
				k = nok;
			if (first || k != prev_k) {
				fprintf(f, "%s[%.3f, %.6f]", first ? "" : ", ", lat[k - 1] / 1e6,
					(double)k / (double)nok);
				first = false;
				prev_k = k;
			}
			if (q >= 1.0)
				break;
		}
	}
	fprintf(f, "],\n");

	/* timeline by scheduled time: started, ok, failed, p50 and max latency */
	fprintf(f, " \"timeline_bin_ms\": %llu, \"timeline\": [", TIMELINE_BIN_NS / 1000000);
	nbins = nrecs ? recs[nrecs - 1].sched / TIMELINE_BIN_NS + 1 : 0;
	if (nbins > 100000)
		nbins = 100000;
	{
		uint64_t i = 0, j;

		for (uint64_t b = 0; b < nbins; b++) {
			uint64_t n = 0, ok = 0, fail = 0, m = 0;

			/* records are in scheduled order */
			for (j = i; j < nrecs && recs[j].sched / TIMELINE_BIN_NS == b; j++) {
				n++;
				if (recs[j].status == ST_OK) {
					lat[ok++] = recs[j].done - recs[j].sched;
				} else if (recs[j].status != ST_PENDING) {
					fail++;
				}
			}
			i = j;
			if (ok) {
				qsort(lat, ok, sizeof(*lat), cmp_u64);
				m = lat[ok - 1];
			}
			fprintf(f, "%s[%.1f, %" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %.3f, %.3f]",
				b ? ", " : "", b * (TIMELINE_BIN_NS / 1e9), n, ok, fail,
				ok ? pct(lat, ok, 0.5) / 1e6 : 0.0, m / 1e6);
		}
	}
	fprintf(f, "],\n \"timeline_fields\": [\"t_s\", \"started\", \"ok\", \"failed\", \"p50_ms\", \"max_ms\"]}\n");
	if (fclose(f) != 0)
		die("writing %s: %s", path, strerror(errno));
	free(lat);
	free(svc);
	free(con);
	free(all);
}

/* ---------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
"usage: spw-loadgen --port P [options]\n"
"  --rate R          open loop, R connections/s scheduled at t0 + i/R; 0 = closed loop (default 0)\n"
"  --duration S      seconds of load (default 5)\n"
"  --count N         stop after N connections (default: rate*duration / unbounded)\n"
"  --concurrency C   connections in flight at most (default 64)\n"
"  --timeout-ms T    give up on a connection T ms after its scheduled start (default 10000)\n"
"  --workers N       report per-worker counts for at least N workers\n"
"  --out PATH        JSON summary (.json) or per-connection CSV (.csv)\n"
"  --records PATH    per-connection CSV in addition to --out\n"
"  --pid-file PATH   the server's pid file ('worker I PID GEN' lines), for --action\n"
"                    and, with --http, to map the pid in a response to the worker\n"
"  --http            speak HTTP/1.1 (Connection: close); the body is the worker's pid\n"
"  --action SPEC     stop@AT:WORKER:LEN (SIGSTOP, SIGCONT LEN s later) or\n"
"                    kill@AT:WORKER (SIGKILL), AT s after the first start; repeatable\n"
"  --quiet\n");
}

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "rate", required_argument, NULL, 'r' },
		{ "duration", required_argument, NULL, 'd' },
		{ "count", required_argument, NULL, 'n' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "workers", required_argument, NULL, 'w' },
		{ "out", required_argument, NULL, 'o' },
		{ "records", required_argument, NULL, 'R' },
		{ "pid-file", required_argument, NULL, 'P' },
		{ "action", required_argument, NULL, 'A' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "http", no_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'p': o.port = atoi(optarg); break;
		case 'r': o.rate = strtod(optarg, NULL); break;
		case 'd': o.duration = strtod(optarg, NULL); break;
		case 'n': o.count = strtoull(optarg, NULL, 10); break;
		case 'c': o.concurrency = atoi(optarg); break;
		case 't': o.timeout_ms = atol(optarg); break;
		case 'w': o.workers = atoi(optarg); break;
		case 'o': o.out = optarg; break;
		case 'R': o.records = optarg; break;
		case 'P': o.pid_file = optarg; break;
		case 'A': parse_action(optarg); break;
		case 'q': o.quiet = true; break;
		case 'H': o.http = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind != argc) {
		usage(stderr);
		exit(2);
	}
	if (o.port <= 0 || o.port > 65535)
		die("--port is required (1..65535)");
	if (o.rate < 0 || o.rate > 10000000)
		die("bad --rate");
	if (!(o.duration > 0) || o.duration > MAX_DURATION_S)
		die("--duration must be in (0, %g]", MAX_DURATION_S);
	if (o.concurrency < 1 || o.concurrency > 200000)
		die("bad --concurrency");
	if (o.timeout_ms < 1 || o.timeout_ms > 600000)
		die("bad --timeout-ms");
	if (o.workers < 0 || o.workers > MAX_WORKER_ID)
		die("bad --workers");
	if (nr_actions && !o.pid_file)
		die("--action needs --pid-file");
	if (o.rate > 0) {
		uint64_t planned = (uint64_t)ceil(o.rate * o.duration);

		if (!o.count || o.count > planned)
			o.count = planned;
	}
	if (!o.count || o.count > MAX_RECORDS)
		o.count = MAX_RECORDS;
}

static void raise_nofile(rlim_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur >= need)
		return;
	if (rl.rlim_max < need) {
		struct rlimit r2 = { need, need };

		if (setrlimit(RLIMIT_NOFILE, &r2) == 0)
			return;
		need = rl.rlim_max;
	}
	rl.rlim_cur = need;
	setrlimit(RLIMIT_NOFILE, &rl);
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < (rlim_t)o.concurrency + 16) {
		fprintf(stderr, "spw-loadgen: RLIMIT_NOFILE %lu: lowering concurrency to %lu\n",
			(unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_cur - 16);
		o.concurrency = (int)rl.rlim_cur - 16;
	}
}

int main(int argc, char **argv)
{
	struct epoll_event evs[512];
	struct sigaction sa;
	uint64_t next = 0, load_end, timeout_ns, t_load_end = 0, hard_end;
	double interval_ns;
	bool open_loop;

	parse_args(argc, argv);
	prctl(PR_SET_TIMERSLACK, 1UL);	/* schedule starts to the microsecond */
	raise_nofile((rlim_t)o.concurrency + 64);
	open_loop = o.rate > 0;
	interval_ns = open_loop ? 1e9 / o.rate : 0;
	timeout_ns = (uint64_t)o.timeout_ms * 1000000ull;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	memset(&dst, 0, sizeof(dst));
	dst.sin_family = AF_INET;
	dst.sin_port = htons((uint16_t)o.port);
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);	/* only ever 127.0.0.1 */

	slots = calloc((size_t)o.concurrency, sizeof(*slots));
	if (!slots)
		die("out of memory");
	for (int i = o.concurrency - 1; i >= 0; i--) {
		slots[i].fd = -1;
		slots[i].next = free_head;
		free_head = i;
	}
	if (o.http) {
		request = HTTP_REQUEST;
		request_len = sizeof(HTTP_REQUEST) - 1;
		http_bufs = malloc((size_t)o.concurrency * HTTP_BUF);
		http_lens = calloc((size_t)o.concurrency, sizeof(*http_lens));
		if (!http_bufs || !http_lens)
			die("out of memory");
		load_pidmap();
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1: %s", strerror(errno));
	if (open_loop) {
		caprecs = o.count;
		recs = malloc(caprecs * sizeof(*recs));
		if (!recs)
			die("out of memory");
	}

	t0 = now_ns() + 2000000;	/* first connection 2 ms from now */
	load_end = (uint64_t)(o.duration * 1e9);
	/* absolute bound on the run: load, then one timeout to drain, + slack */
	hard_end = load_end + timeout_ns + 2000000000ull;

	for (;;) {
		uint64_t now = now_ns();
		uint64_t rel = now > t0 ? now - t0 : 0;
		int64_t wait_ns = 100000000;	/* 100 ms at most */
		bool starting;
		int n;

		if (now < t0) {
			rel = 0;
			wait_ns = (int64_t)(t0 - now);
		} else if (nr_actions) {
			int64_t due = run_actions(rel);

			if (due < wait_ns)
				wait_ns = due;
		}

		/*
		 * Start what is due, START_BATCH at a time: between batches the
		 * events are handled, so a burst of thousands of connect()s does
		 * not leave established connections waiting for their request
		 * (or their response unread) until the whole burst is issued.
		 */
		if (now >= t0 && !interrupted) {
			int batch = 0;

			if (open_loop) {
				while (next < o.count && inflight < o.concurrency) {
					uint64_t sched = (uint64_t)((double)next * interval_ns);

					if (sched > rel) {
						if ((int64_t)(sched - rel) < wait_ns)
							wait_ns = (int64_t)(sched - rel);
						break;
					}
					if (batch++ == START_BATCH) {
						wait_ns = 0;
						break;
					}
					start_conn(sched);
					next++;
				}
			} else {
				while (rel < load_end && next < o.count && inflight < o.concurrency) {
					if (batch++ == START_BATCH) {
						wait_ns = 0;
						break;
					}
					start_conn(now_ns() - t0);
					next++;
				}
			}
		}
		starting = !interrupted && next < o.count && (open_loop || rel < load_end) &&
			   nrecs < MAX_RECORDS;
		if (!starting && !t_load_end)
			t_load_end = rel;
		if (!starting && inflight == 0)
			break;
		if (rel > hard_end) {
			/* should not happen: timeouts bound every connection */
			fprintf(stderr, "spw-loadgen: hard time limit reached\n");
			break;
		}
		if (interrupted && inflight) {
			/* give up on everything still in flight */
			while (act_head >= 0)
				finish(act_head, ST_TIMEOUT, ETIMEDOUT, -1);
			continue;
		}

		/* time out the oldest connections (list is in start order) */
		while (act_head >= 0) {
			struct rec *r = &recs[slots[act_head].rec];
			/* from the schedule: a late start does not extend it */
			uint64_t dl = r->sched + timeout_ns;

			rel = now_ns() - t0;
			if (dl > rel) {
				if ((int64_t)(dl - rel) < wait_ns)
					wait_ns = (int64_t)(dl - rel);
				break;
			}
			finish(act_head, ST_TIMEOUT, ETIMEDOUT, -1);
		}
		if (!open_loop && starting && inflight < o.concurrency)
			wait_ns = 0;
		if (wait_ns < 0)
			wait_ns = 0;

		n = epoll_wait_ns(evs, (int)(sizeof(evs) / sizeof(evs[0])), wait_ns);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait: %s", strerror(errno));
		}
		for (int i = 0; i < n; i++)
			on_event(evs[i].data.u64, evs[i].events);
	}

	cont_stopped();
	{
		uint64_t t_end = now_ns() - t0;
		uint64_t nok = 0, nfail = 0;
		size_t ol = o.out ? strlen(o.out) : 0;

		for (uint64_t i = 0; i < nrecs; i++) {
			if (recs[i].status == ST_OK)
				nok++;
			else
				nfail++;
		}
		if (o.out && ol >= 4 && !strcmp(o.out + ol - 4, ".csv"))
			write_records(o.out);
		else if (o.out)
			write_summary(o.out, t_load_end, t_end);
		if (o.records)
			write_records(o.records);
		if (!o.quiet)
			fprintf(stderr, "spw-loadgen: %" PRIu64 " connections, %" PRIu64
				" ok, %" PRIu64 " failed, %.2f s\n", nrecs, nok, nfail, t_end / 1e9);
	}
	return interrupted ? 130 : 0;
}
