/* SPDX-License-Identifier: MIT */
/*
 * spw-soak: a bounded soak with real traffic. Run as root in a guest.
 *
 *   spw-soak [--seed N] [--seconds S] [--rate CONN_PER_S] [--report-only]
 *            [--plain] [--tick S]
 *
 * A master registers 4 loopback listeners as one group and forks 4
 * workers, one ring each, serving a tiny protocol: read 1 byte, write 1
 * byte, close. A load generator (a process with 4 threads, non-blocking
 * connects) opens connections at a steady rate to random members. During
 * the run the master SIGKILLs a worker now and then and respawns it (the
 * new worker re-opens the ring from the group fd it inherits), SIGSTOPs
 * one for 100-500 ms, and every few seconds ends the generation: stops the
 * workers, closes the group and registers the same listeners again.
 *
 * Invariants, checked at the end:
 *  - every client connection was answered (its byte came back), reset or
 *    refused, or closed without an answer by a worker that was killed
 *    (counted as eof); none is still open after its 5 s deadline (hung);
 *  - per generation, the group's counters balance. The module counts each
 *    connection it places once in @arrived and retires it, in one step
 *    under the group lock, into exactly one of @delivered (a CQE),
 *    @dropped (reset, or its socket could not get a file), @stale (its
 *    accept found nothing), or keeps it in @pending (a token on a ring FIFO
 *    or being handed over) or @dropping (a drop not yet carried out). So
 *    at every snapshot (docs/operations.md):
 *
 *        arrived == delivered + dropped + stale + total.pending + dropping
 *
 *    The "outstanding" form (with total.outstanding for total.pending)
 *    also counts CQEs posted but not consumed, which are already in
 *    @delivered: it holds only when every ring is drained, which the
 *    check after the workers exit (just before close) verifies.
 *    Also: total.spilled_out == total.spilled_in.
 *    --report-only prints a violation instead of failing on it.
 *
 * --plain: the baseline without the module. Same listeners, clients,
 * rate, kills, stops and generations, but no group: worker i accepts with
 * accept4() on listener i (which it inherits; the master keeps the
 * listeners for the whole run, as in the spillway mode), and a generation
 * ends by stopping and respawning the workers. Only the client checks
 * apply (the counter identity is the module's). What differs from the
 * spillway mode is the accept path alone: who takes a connection off the
 * listener's queue, and how the worker learns of it.
 *
 * Client accounting is printed per generation, and with --tick S every S
 * seconds (connections in flight, still connecting or waiting for their
 * byte, and the TCP retransmit counters), so a hang's onset shows. The
 * run's deltas of TcpExt counters (/proc/net/netstat) close the summary.
 *
 * Exit status: 0, 1 when an invariant breaks, 64 on usage errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spillway.h"

#define NW		4	/* workers = members = listeners */
#define NCLIENT_THR	4
#define MAX_INFLIGHT	512	/* per client thread */
#define CLIENT_DEADLINE	5.0	/* seconds: a connection open longer hangs */
#define ENTRIES		16

/* Shared by the master, the workers and the load generator. */
struct shared {
	uint16_t port[NW];
	volatile int stop_load;
	/* load generator results */
	uint64_t started, answered, reset, refused, eof, hung, connect_err;
	uint64_t hung_connecting;	/* of hung: never finished the handshake */
	/* in flight now: still connecting, connected and waiting for the byte */
	uint64_t connecting, waiting;
	/* workers */
	uint64_t served, serve_fail;
};

static struct shared *sh;
static uint64_t seed;
static double seconds = 30, rate = 150;
static bool report_only, plain;
static double tick;
static int failures;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint32_t rnd(uint64_t *st, uint32_t n)
{
	return n ? (uint32_t)(splitmix(st) % n) : 0;
}

static void add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

/* --------------------------------------------------------- clients --- */

enum cstate { C_FREE, C_CONNECTING, C_WAITING };

struct conn {
	int fd;
	enum cstate st;
	double t0;
	uint16_t port;
};

static void sub(uint64_t *c, uint64_t n)
{
	__atomic_fetch_sub(c, n, __ATOMIC_RELAXED);
}

static void conn_done(struct conn *c, uint64_t *counter)
{
	add(counter, 1);
	sub(c->st == C_CONNECTING ? &sh->connecting : &sh->waiting, 1);
	close(c->fd);
	c->st = C_FREE;
}

static void conn_start(struct conn *c, uint64_t *rs)
{
	uint16_t port = sh->port[rnd(rs, NW)];
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	add(&sh->started, 1);
	if (fd < 0) {
		add(&sh->connect_err, 1);
		return;
	}
	c->fd = fd;
	c->t0 = now_s();
	c->port = port;
	c->st = C_CONNECTING;
	add(&sh->connecting, 1);
	if (connect(fd, (void *)&a, sizeof(a)) && errno != EINPROGRESS) {
		if (errno == ECONNREFUSED)
			conn_done(c, &sh->refused);
		else if (errno == ECONNRESET)
			conn_done(c, &sh->reset);
		else
			conn_done(c, &sh->connect_err);
	}
}

/* One poll event on @c: move it on, or finish it. */
static void conn_event(struct conn *c, short rev)
{
	int err = 0;
	socklen_t len = sizeof(err);
	char b;
	ssize_t n;

	if (c->st == C_CONNECTING) {
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err == ECONNREFUSED) {
			conn_done(c, &sh->refused);
			return;
		}
		if (err) {
			conn_done(c, &sh->reset);
			return;
		}
		if (!(rev & POLLOUT))
			return;
		if (send(c->fd, "p", 1, MSG_NOSIGNAL) != 1) {
			conn_done(c, errno == EAGAIN ? &sh->connect_err : &sh->reset);
			return;
		}
		c->st = C_WAITING;
		sub(&sh->connecting, 1);
		add(&sh->waiting, 1);
		return;
	}
	n = recv(c->fd, &b, 1, 0);
	if (n == 1)
		conn_done(c, &sh->answered);
	else if (n == 0)
		conn_done(c, &sh->eof);
	else if (errno != EAGAIN)
		conn_done(c, &sh->reset);
}

static void *client_thread(void *arg)
{
	uint64_t rs = seed ^ (0xc1e47ULL * ((uintptr_t)arg + 1));
	struct conn *c = calloc(MAX_INFLIGHT, sizeof(*c));
	struct pollfd *p = calloc(MAX_INFLIGHT, sizeof(*p));
	double interval = NCLIENT_THR / rate, next = now_s() + interval * rnd(&rs, 100) / 100;
	int idx[MAX_INFLIGHT];

	for (;;) {
		double t = now_s();
		int np = 0, live = 0, timeout;

		/* steady rate: catch up on missed starts, but not in bursts */
		if (!sh->stop_load && t >= next) {
			for (int i = 0; i < MAX_INFLIGHT; i++)
				if (c[i].st == C_FREE) {
					conn_start(&c[i], &rs);
					break;
				}
			next = next + interval < t - 1 ? t : next + interval;
		}
		for (int i = 0; i < MAX_INFLIGHT; i++) {
			if (c[i].st == C_FREE)
				continue;
			live++;
			if (t - c[i].t0 > CLIENT_DEADLINE) {
				fprintf(stderr, "spw-soak: HUNG client: port %u %s for %.1f s\n",
					c[i].port, c[i].st == C_CONNECTING ? "connecting" : "waiting for its byte",
					t - c[i].t0);
				if (c[i].st == C_CONNECTING)
					add(&sh->hung_connecting, 1);
				conn_done(&c[i], &sh->hung);
				continue;
			}
			p[np] = (struct pollfd){ .fd = c[i].fd,
				.events = c[i].st == C_CONNECTING ? POLLOUT : POLLIN };
			idx[np++] = i;
		}
		if (sh->stop_load && !live)
			break;
		timeout = sh->stop_load ? 10 : (int)((next - t) * 1000);
		if (timeout < 0)
			timeout = 0;
		if (timeout > 10)
			timeout = 10;
		if (poll(p, np, timeout) > 0)
			for (int k = 0; k < np; k++)
				if (p[k].revents)
					conn_event(&c[idx[k]], p[k].revents);
	}
	free(c);
	free(p);
	return NULL;
}

static void loadgen(void)
{
	pthread_t t[NCLIENT_THR];

	for (uintptr_t i = 0; i < NCLIENT_THR; i++)
		pthread_create(&t[i], NULL, client_thread, (void *)i);
	for (int i = 0; i < NCLIENT_THR; i++)
		pthread_join(t[i], NULL);
	_exit(0);
}

/* --------------------------------------------------------- workers --- */

static volatile sig_atomic_t worker_stop;

static void on_term(int sig)
{
	(void)sig;
	worker_stop = 1;
}

/* The protocol: read 1 byte, write 1 byte, close. */
static void serve(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char b;

	if (poll(&p, 1, 1000) == 1 && read(fd, &b, 1) == 1 &&
	    write(fd, "r", 1) == 1)
		add(&sh->served, 1);
	else
		add(&sh->serve_fail, 1);
	close(fd);
}

static void worker(int gfd, unsigned idx)
{
	struct sigaction sa = { .sa_handler = on_term };	/* no SA_RESTART */
	struct __kernel_timespec ts = { .tv_nsec = 50 * 1000000 };
	struct spw_ring r;
	struct spw_cqe *cqe;
	int rfd;

	sigaction(SIGTERM, &sa, NULL);
	rfd = spw_ring_open(gfd, idx);
	if (rfd < 0) {
		fprintf(stderr, "spw-soak: worker %u: ring open: %s\n", idx, strerror(-rfd));
		_exit(3);
	}
	close(gfd);	/* the ring holds the group */
	if (spw_ring_init(&r, rfd)) {
		fprintf(stderr, "spw-soak: worker %u: ring init failed\n", idx);
		_exit(3);
	}
	spw_ring_set_accept_flags(&r, SPW_ACCEPT_CLOEXEC);
	while (!worker_stop) {
		if (spw_wait_cqe_timeout(&r, &cqe, &ts))
			continue;
		serve(cqe->fd);
		spw_cqe_seen(&r, cqe);
	}
	/* what was posted is in our fd table: serve it before leaving */
	while (!spw_peek_cqe(&r, &cqe)) {
		serve(cqe->fd);
		spw_cqe_seen(&r, cqe);
	}
	spw_ring_exit(&r);
	_exit(0);
}

/*
 * --plain: the same worker without the module. Wait (50 ms at most, as
 * spw_wait_cqe_timeout() does) for listener @lfd to be readable, accept
 * one connection, serve it. On SIGTERM there is nothing of ours to drain:
 * what is queued stays on the listener for the next worker.
 */
static void worker_plain(int lfd)
{
	struct sigaction sa = { .sa_handler = on_term };	/* no SA_RESTART */

	sigaction(SIGTERM, &sa, NULL);
	while (!worker_stop) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		int fd;

		if (poll(&p, 1, 50) != 1)
			continue;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				continue;
			fprintf(stderr, "spw-soak: worker: accept4: %s\n", strerror(errno));
			_exit(3);
		}
		serve(fd);
	}
	close(lfd);
	_exit(0);
}

/* ---------------------------------------------------------- master --- */

struct wstate {
	pid_t pid;
	double cont_at;		/* SIGSTOPped until then; 0: running */
};

static struct wstate ws[NW];
static int lfds[NW];
static uint64_t kills, stops, unexpected, gens;

static pid_t spawn_worker(int gfd, unsigned idx)
{
	pid_t pid = fork();

	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (!pid) {
		for (int i = 0; i < NW; i++)
			if (!plain || i != (int)idx)
				close(lfds[i]);
		if (plain)
			worker_plain(lfds[idx]);
		worker(gfd, idx);
	}
	ws[idx].pid = pid;
	ws[idx].cont_at = 0;
	return pid;
}

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
	va_list ap;

	if (ok)
		return;
	printf("spw-soak: %s: ", report_only ? "REPORT" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!report_only)
		failures++;
}

/*
 * The counter identity at one snapshot. @drained: every ring is closed
 * (no posted-but-unconsumed CQEs), so the outstanding form must hold too.
 */
static void check_stats(int gfd, const char *when, bool drained)
{
	struct spw_member_stats ms[NW];
	struct spw_group_stats st;
	const struct spw_member_stats *t = &st.total;
	int64_t exact, outst;
	int ret = spw_group_stats_full(gfd, &st, ms, NW);

	if (ret != NW) {
		check(false, "gen %" PRIu64 " %s: GROUP_STATS returned %d", gens, when, ret);
		return;
	}
	exact = (int64_t)t->arrived - (int64_t)(t->delivered + t->dropped + st.stale + t->pending +
						 st.dropping);
	outst = (int64_t)t->arrived - (int64_t)(t->delivered + t->dropped + st.stale + t->outstanding +
						 st.dropping);
	printf("spw-soak: gen %" PRIu64 " %s: arrived=%" PRIu64 " delivered=%" PRIu64
	       " dropped=%" PRIu64 " stale=%" PRIu64 " pending=%u outstanding=%u"
	       " spilled_out=%" PRIu64 " spilled_in=%" PRIu64 " rehomed=%" PRIu64
	       " dropping=%" PRIu64 " | arrived-(delivered+dropped+stale+pending+dropping)=%" PRId64
	       " arrived-(delivered+dropped+stale+outstanding)=%" PRId64 "\n",
	       gens, when, (uint64_t)t->arrived, (uint64_t)t->delivered,
	       (uint64_t)t->dropped, (uint64_t)st.stale, t->pending, t->outstanding,
	       (uint64_t)t->spilled_out, (uint64_t)t->spilled_in, (uint64_t)t->rehomed,
	       (uint64_t)st.dropping, exact, outst);
	check(exact == 0, "gen %" PRIu64 " %s: arrived != delivered + dropped + stale + pending + dropping (off by %" PRId64 ")",
	      gens, when, exact);
	if (drained)
		check(outst == 0, "gen %" PRIu64 " %s: arrived != delivered + dropped + stale + outstanding with every ring closed (off by %" PRId64 ")",
		      gens, when, outst);
	check(t->spilled_out == t->spilled_in, "gen %" PRIu64 " %s: spilled_out %" PRIu64 " != spilled_in %" PRIu64,
	      gens, when, (uint64_t)t->spilled_out, (uint64_t)t->spilled_in);
}

/* TcpExt counters worth watching: retransmits, and every listener drop. */
static const char *const tcpext_names[] = {
	"TCPSynRetrans", "TCPTimeouts", "ListenOverflows", "ListenDrops",
	"TCPReqQFullDrop", "TCPReqQFullDoCookies", "TCPBacklogDrop",
};
#define NTCPEXT (sizeof(tcpext_names) / sizeof(tcpext_names[0]))

/* Read them from /proc/net/netstat (this netns); -1 when missing. */
static void tcpext_read(int64_t v[NTCPEXT])
{
	char names[8192], vals[8192];
	FILE *f = fopen("/proc/net/netstat", "r");

	for (size_t k = 0; k < NTCPEXT; k++)
		v[k] = -1;
	if (!f)
		return;
	while (fgets(names, sizeof(names), f) && fgets(vals, sizeof(vals), f)) {
		char *sn, *sv, *n, *x;

		if (strncmp(names, "TcpExt:", 7))
			continue;
		n = strtok_r(names + 7, " \n", &sn);
		x = strtok_r(vals + 7, " \n", &sv);
		for (; n && x; n = strtok_r(NULL, " \n", &sn), x = strtok_r(NULL, " \n", &sv))
			for (size_t k = 0; k < NTCPEXT; k++)
				if (!strcmp(n, tcpext_names[k]))
					v[k] = strtoll(x, NULL, 10);
	}
	fclose(f);
}

/* Client counters (and TcpExt) since the last report of the same kind. */
struct creport {
	uint64_t started, answered, reset, refused, eof, hung, hung_connecting, connect_err;
	int64_t tcpext[NTCPEXT];
};

static void creport_take(struct creport *r)
{
	r->started = __atomic_load_n(&sh->started, __ATOMIC_RELAXED);
	r->answered = __atomic_load_n(&sh->answered, __ATOMIC_RELAXED);
	r->reset = __atomic_load_n(&sh->reset, __ATOMIC_RELAXED);
	r->refused = __atomic_load_n(&sh->refused, __ATOMIC_RELAXED);
	r->eof = __atomic_load_n(&sh->eof, __ATOMIC_RELAXED);
	r->hung = __atomic_load_n(&sh->hung, __ATOMIC_RELAXED);
	r->hung_connecting = __atomic_load_n(&sh->hung_connecting, __ATOMIC_RELAXED);
	r->connect_err = __atomic_load_n(&sh->connect_err, __ATOMIC_RELAXED);
	tcpext_read(r->tcpext);
}

static double t_start;
static struct creport rep_gen, rep_tick, rep_run;

/* Print "@what: +deltas, in flight" and move @last to now. */
static void creport_print(const char *what, struct creport *last)
{
	struct creport n;

	creport_take(&n);
	printf("spw-soak: %s t=%.1f clients: +started=%" PRIu64 " +answered=%" PRIu64
	       " +reset=%" PRIu64 " +refused=%" PRIu64 " +eof=%" PRIu64 " +connect_err=%" PRIu64
	       " +hung=%" PRIu64 " (connecting %" PRIu64 ") | in flight: connecting=%" PRIu64
	       " waiting=%" PRIu64 " | +TCPSynRetrans=%" PRId64 " +TCPTimeouts=%" PRId64 "\n",
	       what, now_s() - t_start, n.started - last->started, n.answered - last->answered,
	       n.reset - last->reset, n.refused - last->refused, n.eof - last->eof,
	       n.connect_err - last->connect_err, n.hung - last->hung,
	       n.hung_connecting - last->hung_connecting,
	       __atomic_load_n(&sh->connecting, __ATOMIC_RELAXED),
	       __atomic_load_n(&sh->waiting, __ATOMIC_RELAXED),
	       n.tcpext[0] - last->tcpext[0], n.tcpext[1] - last->tcpext[1]);
	*last = n;
}

static int group_create(void)
{
	struct spw_group_params p = { .ring_entries = ENTRIES };
	int gfd;

	if (plain) {
		gens++;
		for (unsigned i = 0; i < NW; i++)
			spawn_worker(-1, i);
		return -1;
	}
	gfd = spw_group_create(lfds, NW, &p);
	if (gfd < 0) {
		printf("spw-soak: FAIL: group create (gen %" PRIu64 "): %s\n", gens, strerror(-gfd));
		exit(1);
	}
	gens++;
	for (unsigned i = 0; i < NW; i++)
		spawn_worker(gfd, i);
	return gfd;
}

/* Reap a worker that died on its own (not one we killed). */
static void reap_unexpected(int gfd)
{
	for (unsigned i = 0; i < NW; i++) {
		int st;

		if (ws[i].pid > 0 && waitpid(ws[i].pid, &st, WNOHANG) == ws[i].pid) {
			printf("spw-soak: worker %u (pid %d) died unexpectedly: status 0x%x\n",
			       i, ws[i].pid, st);
			unexpected++;
			spawn_worker(gfd, i);
		}
	}
}

/* End a generation: stop the workers, check the counters, close. */
static void group_end(int gfd)
{
	char what[48];

	snprintf(what, sizeof(what), "gen %" PRIu64 " end", gens);
	creport_print(what, &rep_gen);
	if (!plain)
		check_stats(gfd, "running", false);
	for (unsigned i = 0; i < NW; i++) {
		kill(ws[i].pid, SIGCONT);
		kill(ws[i].pid, SIGTERM);
	}
	for (unsigned i = 0; i < NW; i++) {
		int st;

		/* bounded: a worker leaves within one 50 ms wait + its drain */
		for (double t = now_s() + 10; waitpid(ws[i].pid, &st, WNOHANG) != ws[i].pid;) {
			if (now_s() > t) {
				check(false, "worker %u (pid %d) did not exit 10 s after SIGTERM", i, ws[i].pid);
				kill(ws[i].pid, SIGKILL);
				waitpid(ws[i].pid, &st, 0);
				break;
			}
			sleep_s(0.005);
		}
		if (WIFEXITED(st) && WEXITSTATUS(st))
			check(false, "worker %u exited with status %d", i, WEXITSTATUS(st));
		ws[i].pid = 0;
	}
	if (plain)
		return;
	check_stats(gfd, "before close", true);
	close(gfd);
}

static void usage(void)
{
	fprintf(stderr, "usage: spw-soak [--seed N] [--seconds S] [--rate CONN_PER_S] [--report-only]\n"
			"                [--plain] [--tick S]\n");
	exit(64);
}

int main(int argc, char **argv)
{
	bool have_seed = false;
	uint64_t rs;
	double t_end, next_gen, next_kill, next_stop, next_tick;
	pid_t lg;
	int gfd, st;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			seed = strtoull(argv[++i], NULL, 0);
			have_seed = true;
		} else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
			seconds = atof(argv[++i]);
		} else if (!strcmp(argv[i], "--rate") && i + 1 < argc) {
			rate = atof(argv[++i]);
		} else if (!strcmp(argv[i], "--report-only")) {
			report_only = true;
		} else if (!strcmp(argv[i], "--plain")) {
			plain = true;
		} else if (!strcmp(argv[i], "--tick") && i + 1 < argc) {
			tick = atof(argv[++i]);
		} else {
			usage();
		}
	}
	if (!have_seed)
		seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	if (seconds <= 0 || rate <= 0 || tick < 0)
		usage();
	printf("spw-soak: seed=%" PRIu64 " seconds=%g rate=%g/s workers=%d entries=%d mode=%s\n",
	       seed, seconds, rate, NW, ENTRIES, plain ? "plain (accept4, no group)" : "spillway");
	fflush(stdout);
	rs = seed;
	signal(SIGPIPE, SIG_IGN);

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	for (int i = 0; i < NW; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof(a);
		int one = 1;

		lfds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		setsockopt(lfds[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (lfds[i] < 0 || bind(lfds[i], (void *)&a, sizeof(a)) ||
		    listen(lfds[i], 4096) || getsockname(lfds[i], (void *)&a, &len)) {
			perror("spw-soak: listener");
			return 1;
		}
		sh->port[i] = ntohs(a.sin_port);
	}
	t_start = now_s();
	creport_take(&rep_run);
	rep_gen = rep_tick = rep_run;
	fflush(stdout);
	lg = fork();
	if (lg < 0) {
		perror("fork");
		return 1;
	}
	if (!lg) {
		for (int i = 0; i < NW; i++)
			close(lfds[i]);
		loadgen();
	}

	gfd = group_create();
	t_end = now_s() + seconds;
	next_gen = now_s() + 4 + rnd(&rs, 4000) / 1000.0;
	next_kill = now_s() + 1 + rnd(&rs, 3000) / 1000.0;
	next_stop = now_s() + 0.5 + rnd(&rs, 2000) / 1000.0;
	next_tick = tick ? now_s() + tick : 0;
	while (now_s() < t_end) {
		double t = now_s();

		if (tick && t >= next_tick) {
			creport_print("tick", &rep_tick);
			next_tick = next_tick + tick < t ? t + tick : next_tick + tick;
		}
		fflush(stdout);
		reap_unexpected(gfd);
		for (unsigned i = 0; i < NW; i++)
			if (ws[i].cont_at && t >= ws[i].cont_at) {
				kill(ws[i].pid, SIGCONT);
				ws[i].cont_at = 0;
			}
		if (t >= next_kill) {
			unsigned i = rnd(&rs, NW);

			kill(ws[i].pid, SIGKILL);
			waitpid(ws[i].pid, NULL, 0);
			kills++;
			spawn_worker(gfd, i);
			next_kill = t + 1 + rnd(&rs, 3000) / 1000.0;
		}
		if (t >= next_stop) {
			unsigned i = rnd(&rs, NW);

			if (!ws[i].cont_at) {
				kill(ws[i].pid, SIGSTOP);
				ws[i].cont_at = t + 0.1 + rnd(&rs, 400) / 1000.0;
				stops++;
			}
			next_stop = t + 0.5 + rnd(&rs, 2000) / 1000.0;
		}
		if (t >= next_gen) {
			group_end(gfd);
			gfd = group_create();
			next_gen = now_s() + 4 + rnd(&rs, 4000) / 1000.0;
		}
		sleep_s(0.005);
	}

	/* no new connections; the in-flight ones finish or hit their deadline */
	sh->stop_load = 1;
	for (unsigned i = 0; i < NW; i++)
		if (ws[i].cont_at) {
			kill(ws[i].pid, SIGCONT);
			ws[i].cont_at = 0;
		}
	for (double t = now_s() + CLIENT_DEADLINE + 10; waitpid(lg, &st, WNOHANG) != lg;) {
		reap_unexpected(gfd);
		if (tick && now_s() >= next_tick) {
			creport_print("tick", &rep_tick);
			fflush(stdout);
			next_tick = next_tick + tick < now_s() ? now_s() + tick : next_tick + tick;
		}
		if (now_s() > t) {
			check(false, "the load generator did not finish");
			kill(lg, SIGKILL);
			waitpid(lg, &st, 0);
			break;
		}
		sleep_s(0.01);
	}
	group_end(gfd);
	for (int i = 0; i < NW; i++)
		close(lfds[i]);

	uint64_t done = sh->answered + sh->reset + sh->refused + sh->eof + sh->hung + sh->connect_err;

	printf("spw-soak: summary: seed=%" PRIu64 " mode=%s generations=%" PRIu64 " kills=%" PRIu64
	       " stops=%" PRIu64 " unexpected_worker_exits=%" PRIu64 "\n",
	       seed, plain ? "plain" : "spillway", gens, kills, stops, unexpected);
	printf("spw-soak: clients: started=%" PRIu64 " answered=%" PRIu64 " reset=%" PRIu64
	       " refused=%" PRIu64 " eof=%" PRIu64 " connect_err=%" PRIu64 " hung=%" PRIu64
	       " | workers served=%" PRIu64 " serve_fail=%" PRIu64 "\n",
	       sh->started, sh->answered, sh->reset, sh->refused, sh->eof,
	       sh->connect_err, sh->hung, sh->served, sh->serve_fail);
	{
		int64_t now[NTCPEXT];

		tcpext_read(now);
		printf("spw-soak: hung: %" PRIu64 " connecting (no handshake), %" PRIu64
		       " waiting for their byte | TcpExt over the run:",
		       sh->hung_connecting, sh->hung - sh->hung_connecting);
		for (size_t k = 0; k < NTCPEXT; k++)
			printf(" %s=%" PRId64, tcpext_names[k], now[k] - rep_run.tcpext[k]);
		printf("\n");
	}
	check(sh->hung == 0, "%" PRIu64 " client connections hung past %.0f s", sh->hung, CLIENT_DEADLINE);
	check(done == sh->started, "clients: %" PRIu64 " started, %" PRIu64 " accounted for", sh->started, done);
	check(sh->answered > 0, "no client connection was answered");
	check(unexpected == 0, "%" PRIu64 " workers died unexpectedly", unexpected);
	printf("seed=%" PRIu64 "\n", seed);
	if (failures) {
		printf("spw-soak: FAIL: %d invariant(s) broken; reproduce with --seed %" PRIu64 "\n",
		       failures, seed);
		return 1;
	}
	printf("spw-soak: OK\n");
	return 0;
}
