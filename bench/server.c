// SPDX-License-Identifier: MIT
/*
 * spw-bench-server: a pre-forking accept benchmark server.
 *
 * A master process creates the listening socket(s), forks N workers and
 * supervises them (nginx style). Each worker accepts connections with one
 * of the accept paths in mode-*.c (server.h is the interface):
 *
 *   spillway   N SO_REUSEPORT listeners registered as one spillway group;
 *              each worker reaps its own accept completion ring.
 *   reuseport  N SO_REUSEPORT listeners, blocking accept4() per worker; the
 *              master keeps its copies, so a replacement inherits the queue.
 *   migrate    reuseport with net.ipv4.tcp_migrate_req = 1 (set by the
 *              driver) and no master copies: a dead worker's queue migrates.
 *   uring      N SO_REUSEPORT listeners, io_uring multishot accept.
 *   spw-uring  spillway's group, taken with SPW_URING_ACCEPT in io_uring.
 *   epoll      one shared non-blocking listener, EPOLLEXCLUSIVE epoll_wait()
 *              per worker, accept4() until EAGAIN.
 *   bpf        N SO_REUSEPORT listeners steered by an sk_reuseport program
 *              to the least-loaded worker (built when clang/libbpf exist).
 *
 * Per connection a worker reads the client's one-line request, writes
 * "w<index>\n", does the configured work (nothing, a CPU busy loop or a
 * sleep), then closes the socket. The request matters: with SYN cookies a
 * connection whose final ACK was dropped on accept-queue overflow exists
 * only on the client; a silent client would wait forever, a client that
 * sends (like HTTP) retransmits its data until the server takes it.
 *
 * Counters live in a MAP_SHARED anonymous mapping created by the master
 * before forking, so they survive a worker being SIGKILLed. On SIGTERM the
 * master stops the workers and writes a JSON document to --stats-file.
 * The master writes "--pid-file" (master and worker pids) once every
 * worker is ready, and rewrites it whenever a replacement worker is ready.
 *
 * Built without libspillway (-DSPW_BENCH_NO_SPILLWAY) the spillway mode
 * fails with exit status 3; built without BPF, the bpf mode does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "server.h"

static const char *const work_names[] = { "none", "cpu", "sleep" };

/* every mode this binary knows, including those it was built without */
static const struct {
	const char *name;
	const struct bench_mode *mode;	/* NULL: not built in */
} modes[] = {
#ifndef SPW_BENCH_NO_SPILLWAY
	{ "spillway", &mode_spillway },
	{ "spw-uring", &mode_spw_uring },
#else
	{ "spillway", NULL },
	{ "spw-uring", NULL },
#endif
	{ "reuseport", &mode_reuseport },
	{ "migrate", &mode_migrate },
	{ "uring", &mode_uring },
	{ "epoll", &mode_epoll },
#ifdef SPW_BENCH_HAVE_BPF
	{ "bpf", &mode_bpf },
#else
	{ "bpf", NULL },
#endif
};

struct opts o = {
	.mode = &mode_reuseport,
	.workers = 4,
	.port = 0,
	.work = W_NONE,
	.work_us = 0,
	.slow_worker = -1,
	.slow_factor = 1.0,
	.capacity = 64,
	.respawn = true,
	.respawn_delay_ms = 0,
	.max_runtime_s = 900,
};

struct wslot *slots;
int listen_fds[MAX_LISTENERS];
int nr_listen;
static pid_t master_pid;
long tcp_sock_bytes;

/* worker state */
volatile sig_atomic_t stop_flag;
int my_index;
struct wslot *me;

void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "spw-bench-server[%d]: ", (int)getpid());
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void logmsg(const char *fmt, ...)
{
	va_list ap;

	if (o.quiet)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "spw-bench-server[%d]: ", (int)getpid());
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static long read_vmrss_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "VmRSS:", 6)) {
			kb = strtol(line + 6, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

/* Object size of the "TCP" slab (a full struct tcp_sock), for the
 * accept-queue memory estimate. Falls back to a typical 6.x value. */
static long read_tcp_sock_bytes(void)
{
	char line[512];
	long sz = 0;
	FILE *f = fopen("/proc/slabinfo", "re");

	if (f) {
		while (fgets(line, sizeof(line), f)) {
			char name[64];
			long a, b, objsize;

			if (sscanf(line, "%63s %ld %ld %ld", name, &a, &b, &objsize) == 4 &&
			    !strcmp(name, "TCP")) {
				sz = objsize;
				break;
			}
		}
		fclose(f);
	}
	return sz > 0 ? sz : 2368;
}

/* ---------------------------------------------------------------- */
/* per-connection work                                                */

static void burn_cpu(long usec)
{
	uint64_t end = now_ns(CLOCK_THREAD_CPUTIME_ID) + (uint64_t)usec * 1000u;
	volatile unsigned long x = 0;

	while (now_ns(CLOCK_THREAD_CPUTIME_ID) < end && !stop_flag) {
		for (int i = 0; i < 1000; i++)
			x += (unsigned long)i;
	}
}

void sleep_us(long usec)
{
	struct timespec ts = { usec / 1000000, (usec % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !stop_flag)
		;
}

static long work_for(int index)
{
	double us = (double)o.work_us;

	if (index == o.slow_worker)
		us *= o.slow_factor;
	return (long)us;
}

void handle_conn(int fd)
{
	char buf[64];
	int len;
	ssize_t n;
	long us;

	/* the request: one short line the client sends right after connect */
	do {
		n = recv(fd, buf, sizeof(buf), 0);
	} while (n < 0 && errno == EINTR && !stop_flag);
	if (n <= 0) {
		me->read_errors++;	/* client gone (timed out, reset) */
		close(fd);
		return;
	}
	len = snprintf(buf, sizeof(buf), "w%d\n", my_index);
	if (send(fd, buf, (size_t)len, MSG_NOSIGNAL) != len)
		me->write_errors++;
	us = work_for(my_index);
	if (us > 0) {
		if (o.work == W_CPU)
			burn_cpu(us);
		else if (o.work == W_SLEEP)
			sleep_us(us);
	}
	close(fd);
}

void note_batch(uint64_t n)
{
	if (n > me->max_batch)
		me->max_batch = n;
}

static unsigned consecutive_errors;

/*
 * An accept-path failure: count it, log the first ones, back off when they
 * repeat, and give up when nothing but failures comes back (a broken accept
 * path must not spin a CPU for the rest of the run).
 */
void accept_failed(const char *what, int err)
{
	me->accept_errors++;
	consecutive_errors++;
	if (consecutive_errors <= 3)
		logmsg("worker %d: %s: %s", my_index, what, strerror(err));
	if (consecutive_errors >= 1000)
		die("worker %d: %s keeps failing: %s", my_index, what, strerror(err));
	if (consecutive_errors >= 10 || err == EMFILE || err == ENFILE || err == ENOBUFS ||
	    err == ENOMEM)
		sleep_us(1000);
}

void accepted_one(void)
{
	me->accepted++;
	consecutive_errors = 0;
}

/* ---------------------------------------------------------------- */
/* worker process                                                     */

static void on_stop(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void worker_main(int index)
{
	struct sigaction sa;
	sigset_t none;
	char name[32];

	my_index = index;
	me = &slots[index];
	stop_flag = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != master_pid)
		_exit(1);
	snprintf(name, sizeof(name), "spw-worker%d", index);
	name[15] = '\0';	/* comm is at most 15 characters */
	prctl(PR_SET_NAME, name);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;	/* no SA_RESTART: blocking calls return EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_DFL;
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	me->rss_before_kb = read_vmrss_kb();
	o.mode->worker_run(index);
	me->rss_end_kb = read_vmrss_kb();
	_exit(0);
}

/* ---------------------------------------------------------------- */
/* master                                                             */

struct wproc {
	pid_t pid;		/* 0: not running */
	uint64_t respawn_at;	/* CLOCK_MONOTONIC ns, 0: none scheduled */
	int exits;
	int last_status;
};
static struct wproc procs[MAX_WORKERS];
static int respawns;
static int unexpected_exits;
static int setup_failures;
static bool alive_at_stop[MAX_WORKERS];

static pid_t spawn_worker(int index)
{
	pid_t pid;

	slots[index].generation++;
	slots[index].setup_error = 0;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0)
		worker_main(index);
	slots[index].pid = pid;
	procs[index].pid = pid;
	procs[index].respawn_at = 0;
	return pid;
}

static void write_pid_file(void)
{
	char tmp[PATH_MAX];
	FILE *f;

	if (!o.pid_file)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", o.pid_file, (int)getpid());
	f = fopen(tmp, "we");
	if (!f)
		die("%s: %s", tmp, strerror(errno));
	fprintf(f, "master %d\n", (int)master_pid);
	for (int i = 0; i < o.workers; i++)
		fprintf(f, "worker %d %d %d\n", i, (int)procs[i].pid, slots[i].generation);
	if (fclose(f) != 0 || rename(tmp, o.pid_file) != 0)
		die("writing %s: %s", o.pid_file, strerror(errno));
}

static bool all_ready(void)
{
	for (int i = 0; i < o.workers; i++) {
		if (!procs[i].pid)
			return false;
		if (__atomic_load_n(&slots[i].ready, __ATOMIC_ACQUIRE) != slots[i].generation)
			return false;
	}
	return true;
}

/* Some TcpExt counters from /proc/net/netstat (-1 when unavailable); they
 * are per network namespace, so they include the load generator's side. */
static const char *const netstat_keys[] = {
	"ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies",
	"TCPBacklogDrop", "TCPSynRetrans", "TCPTimeouts",
};
#define NR_NETSTAT (sizeof(netstat_keys) / sizeof(netstat_keys[0]))

static void read_netstat(long long *out)
{
	char hdr[8192], val[8192];
	FILE *f = fopen("/proc/net/netstat", "re");

	for (size_t k = 0; k < NR_NETSTAT; k++)
		out[k] = -1;
	if (!f)
		return;
	while (fgets(hdr, sizeof(hdr), f) && fgets(val, sizeof(val), f)) {
		char *sh, *sv, *th, *tv;

		if (strncmp(hdr, "TcpExt:", 7))
			continue;
		th = strtok_r(hdr, " \n", &sh);
		tv = strtok_r(val, " \n", &sv);
		while ((th = strtok_r(NULL, " \n", &sh)) && (tv = strtok_r(NULL, " \n", &sv))) {
			for (size_t k = 0; k < NR_NETSTAT; k++)
				if (!strcmp(th, netstat_keys[k]))
					out[k] = atoll(tv);
		}
	}
	fclose(f);
}

void close_listeners_except(int keep)
{
	for (int i = 0; i < nr_listen; i++)
		if (i != keep && listen_fds[i] >= 0)
			close(listen_fds[i]);
}

void worker_ready(uint64_t ring_bytes, uint64_t queue_bound)
{
	me->ring_bytes = ring_bytes;
	me->queue_bound = queue_bound;
	me->accept_mem_bytes = ring_bytes + queue_bound * (uint64_t)tcp_sock_bytes;
	me->rss_after_kb = read_vmrss_kb();
	__atomic_store_n(&me->ready, me->generation, __ATOMIC_RELEASE);
}

int make_listener(bool reuseport, bool nonblock, int backlog)
{
	struct sockaddr_in sin;
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);

	if (fd < 0)
		die("socket: %s", strerror(errno));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("SO_REUSEADDR: %s", strerror(errno));
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		die("SO_REUSEPORT: %s", strerror(errno));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)o.port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		die("bind 127.0.0.1:%d: %s", o.port, strerror(errno));
	if (listen(fd, backlog) < 0)
		die("listen: %s", strerror(errno));
	return fd;
}

static void json_u64(FILE *f, const char *k, uint64_t v, bool comma)
{
	fprintf(f, "\"%s\": %" PRIu64 "%s", k, v, comma ? ", " : "");
}

/* CPU time of the master and of every reaped worker (all incarnations,
 * SIGKILLed ones included: the kernel accounts a child once it is waited
 * for), in ms. */
static void server_cpu_ms(double *user_ms, double *sys_ms)
{
	struct rusage self, kids;

	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	*user_ms = (double)(self.ru_utime.tv_sec + kids.ru_utime.tv_sec) * 1e3 +
		   (double)(self.ru_utime.tv_usec + kids.ru_utime.tv_usec) / 1e3;
	*sys_ms = (double)(self.ru_stime.tv_sec + kids.ru_stime.tv_sec) * 1e3 +
		  (double)(self.ru_stime.tv_usec + kids.ru_stime.tv_usec) / 1e3;
}

static void write_stats(const long long *ns0, const long long *ns1, const char *mode_json)
{
	double user_ms, sys_ms;
	char tmp[PATH_MAX];
	uint64_t acc = 0, sys = 0, spl = 0, eag = 0, err = 0, werr = 0, rerr = 0;
	FILE *f;

	if (!o.stats_file)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", o.stats_file, (int)getpid());
	f = fopen(tmp, "we");
	if (!f)
		die("%s: %s", tmp, strerror(errno));
	server_cpu_ms(&user_ms, &sys_ms);
	fprintf(f, "{\"mode\": \"%s\", \"workers\": %d, \"members\": %d, \"port\": %d, "
		"\"capacity\": %u, \"policy\": %u, \"spill_at\": %u, "
		"\"cpu_user_ms\": %.1f, \"cpu_sys_ms\": %.1f, "
		"\"work\": \"%s:%ld\", \"slow_worker\": %d, "
		"\"slow_factor\": %g, \"tcp_sock_bytes\": %ld, \"respawns\": %d, "
		"\"unexpected_exits\": %d, \"setup_failures\": %d,\n \"per_worker\": [",
		o.mode->name, o.workers, o.members, o.port, o.capacity, o.policy, o.spill_at,
		user_ms, sys_ms,
		work_names[o.work], o.work_us, o.slow_worker, o.slow_factor,
		tcp_sock_bytes, respawns, unexpected_exits, setup_failures);
	for (int i = 0; i < o.workers; i++) {
		struct wslot *s = &slots[i];

		fprintf(f, "%s\n  {\"index\": %d, \"pid\": %d, \"generations\": %d, "
			"\"running_at_stop\": %s, \"setup_error\": ",
			i ? "," : "", i, s->pid, s->generation, alive_at_stop[i] ? "true" : "false");
		if (s->setup_error)
			fprintf(f, "\"%s\", ", strerror(s->setup_error));
		else
			fprintf(f, "null, ");
		json_u64(f, "accepted", s->accepted, true);
		json_u64(f, "syscalls", s->syscalls, true);
		json_u64(f, "accept_eagain", s->accept_eagain, true);
		json_u64(f, "accept_errors", s->accept_errors, true);
		json_u64(f, "spilled_cqes", s->spilled, true);
		json_u64(f, "write_errors", s->write_errors, true);
		json_u64(f, "read_errors", s->read_errors, true);
		json_u64(f, "max_batch", s->max_batch, true);
		json_u64(f, "uring_rearms", s->rearms, true);
		json_u64(f, "ring_bytes", s->ring_bytes, true);
		json_u64(f, "queue_bound", s->queue_bound, true);
		json_u64(f, "accept_mem_bytes", s->accept_mem_bytes, true);
		fprintf(f, "\"rss_before_setup_kb\": %" PRId64 ", \"rss_after_setup_kb\": %" PRId64
			", \"rss_end_kb\": %" PRId64 "}",
			s->rss_before_kb, s->rss_after_kb, s->rss_end_kb);
		acc += s->accepted;
		sys += s->syscalls;
		spl += s->spilled;
		eag += s->accept_eagain;
		err += s->accept_errors;
		werr += s->write_errors;
		rerr += s->read_errors;
	}
	fprintf(f, "],\n \"total\": {");
	json_u64(f, "accepted", acc, true);
	json_u64(f, "syscalls", sys, true);
	json_u64(f, "accept_eagain", eag, true);
	json_u64(f, "accept_errors", err, true);
	json_u64(f, "write_errors", werr, true);
	json_u64(f, "read_errors", rerr, true);
	json_u64(f, "spilled_cqes", spl, true);
	if (acc)
		fprintf(f, "\"syscalls_per_conn\": %.4f}", (double)sys / (double)acc);
	else
		fprintf(f, "\"syscalls_per_conn\": null}");
	fprintf(f, ",\n \"netstat_delta\": {");
	for (size_t k = 0; k < NR_NETSTAT; k++) {
		if (ns0[k] < 0 || ns1[k] < 0)
			fprintf(f, "%s\"%s\": null", k ? ", " : "", netstat_keys[k]);
		else
			fprintf(f, "%s\"%s\": %lld", k ? ", " : "", netstat_keys[k], ns1[k] - ns0[k]);
	}
	fprintf(f, "},\n \"mode_stats\": %s}\n", mode_json ? mode_json : "null");
	if (fclose(f) != 0 || rename(tmp, o.stats_file) != 0)
		die("writing %s: %s", o.stats_file, strerror(errno));
}

static int index_of(pid_t pid)
{
	for (int i = 0; i < o.workers; i++)
		if (procs[i].pid == pid)
			return i;
	return -1;
}

/* Reap dead children; schedule replacements. Returns how many died. */
static int reap(bool stopping)
{
	int status, n = 0;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		int i = index_of(pid);

		if (i < 0)
			continue;
		n++;
		procs[i].pid = 0;
		procs[i].exits++;
		procs[i].last_status = status;
		if (stopping)
			continue;
		unexpected_exits++;
		if (WIFSIGNALED(status))
			logmsg("worker %d (pid %d) killed by signal %d", i, (int)pid, WTERMSIG(status));
		else
			logmsg("worker %d (pid %d) exited with status %d", i, (int)pid, WEXITSTATUS(status));
		if (slots[i].setup_error || slots[i].ready != slots[i].generation) {
			/* a worker that cannot set up will not do better next time */
			setup_failures++;
			logmsg("worker %d (generation %d) failed during setup (%s); not respawning",
			       i, slots[i].generation,
			       slots[i].setup_error ? strerror(slots[i].setup_error) : "died");
			continue;
		}
		if (o.respawn)
			procs[i].respawn_at = now_ns(CLOCK_MONOTONIC) +
					      (uint64_t)o.respawn_delay_ms * 1000000ull;
	}
	return n;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: spw-bench-server --mode spillway|spw-uring|reuseport|migrate|uring|epoll|bpf --port P [options]\n"
"  --workers N            worker processes (default 4)\n"
"  --work none|cpu:USEC|sleep:USEC   per-connection work after the response\n"
"  --slow-worker I        worker index whose work is multiplied by --slow-factor\n"
"  --slow-factor F        (default 1)\n"
"  --capacity Q           connections that may wait for one worker, in every\n"
"                         queue of its accept path (default 64; power of two)\n"
"  --members M            spillway: M group members, the ones past --workers idle\n"
"  --policy P             spillway: placement policy: default, origin, least, p2c, cpu\n"
"  --spill-at N           spillway: spill at N waiting on a ring (0: when full)\n"
"  --stats-file PATH      JSON counters written at shutdown (SIGTERM/SIGINT)\n"
"  --pid-file PATH        'master PID' and 'worker I PID GEN' lines, written when ready\n"
"  --no-respawn           do not replace workers that die\n"
"  --respawn-delay-ms D   wait D ms before replacing a dead worker (default 0)\n"
"  --max-runtime S        shut down by itself after S seconds (default 900)\n"
"  --quiet\n");
}

static unsigned parse_policy(const char *s)
{
	static const char *const names[] = { "default", "origin", "least", "p2c", "cpu" };

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(s, names[i]))
			return i;	/* SPW_POLICY_* in the same order */
	die("unknown --policy '%s' (default, origin, least, p2c, cpu)", s);
	return 0;
}

static long parse_long(const char *s, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s)
		die("bad %s: '%s'", what, s);
	return v;
}

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "workers", required_argument, NULL, 'n' },
		{ "port", required_argument, NULL, 'p' },
		{ "work", required_argument, NULL, 'w' },
		{ "slow-worker", required_argument, NULL, 's' },
		{ "slow-factor", required_argument, NULL, 'f' },
		{ "capacity", required_argument, NULL, 'b' },
		{ "members", required_argument, NULL, 'M' },
		{ "policy", required_argument, NULL, 'Y' },
		{ "spill-at", required_argument, NULL, 'A' },
		{ "stats-file", required_argument, NULL, 'S' },
		{ "pid-file", required_argument, NULL, 'P' },
		{ "no-respawn", no_argument, NULL, 'R' },
		{ "respawn-delay-ms", required_argument, NULL, 'D' },
		{ "max-runtime", required_argument, NULL, 'T' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;
	bool have_mode = false;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			have_mode = false;
			for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
				if (strcmp(optarg, modes[i].name))
					continue;
				if (!modes[i].mode) {
					fprintf(stderr, "spw-bench-server: built without the %s mode\n",
						optarg);
					exit(3);
				}
				o.mode = modes[i].mode;
				have_mode = true;
			}
			if (!have_mode)
				die("unknown mode '%s'", optarg);
			break;
		case 'n':
			o.workers = (int)parse_long(optarg, "--workers");
			break;
		case 'p':
			o.port = (int)parse_long(optarg, "--port");
			break;
		case 'w':
			if (!strcmp(optarg, "none")) {
				o.work = W_NONE;
				o.work_us = 0;
			} else if (!strncmp(optarg, "cpu:", 4)) {
				o.work = W_CPU;
				o.work_us = parse_long(optarg + 4, "--work cpu:USEC");
			} else if (!strncmp(optarg, "sleep:", 6)) {
				o.work = W_SLEEP;
				o.work_us = parse_long(optarg + 6, "--work sleep:USEC");
			} else {
				die("bad --work '%s'", optarg);
			}
			break;
		case 's':
			o.slow_worker = (int)parse_long(optarg, "--slow-worker");
			break;
		case 'f': {
			char *end;

			o.slow_factor = strtod(optarg, &end);
			if (*end || o.slow_factor < 0)
				die("bad --slow-factor '%s'", optarg);
			break;
		}
		case 'b':
			o.capacity = (unsigned)parse_long(optarg, "--capacity");
			break;
		case 'M':
			o.members = (int)parse_long(optarg, "--members");
			break;
		case 'Y':
			o.policy = parse_policy(optarg);
			break;
		case 'A':
			o.spill_at = (unsigned)parse_long(optarg, "--spill-at");
			break;
		case 'S':
			o.stats_file = optarg;
			break;
		case 'P':
			o.pid_file = optarg;
			break;
		case 'R':
			o.respawn = false;
			break;
		case 'D':
			o.respawn_delay_ms = parse_long(optarg, "--respawn-delay-ms");
			break;
		case 'T':
			o.max_runtime_s = parse_long(optarg, "--max-runtime");
			break;
		case 'q':
			o.quiet = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind != argc) {
		usage(stderr);
		exit(2);
	}
	if (o.workers < 1 || o.workers > MAX_WORKERS)
		die("--workers must be 1..%d", MAX_WORKERS);
	if (!o.members)
		o.members = o.workers;
	if (o.members < o.workers || o.members > MAX_LISTENERS)
		die("--members must be %d..%d", o.workers, MAX_LISTENERS);
	if (o.members != o.workers && strcmp(o.mode->name, "spillway"))
		die("--members is for the spillway mode only");
	if ((o.policy || o.spill_at) && strcmp(o.mode->name, "spillway"))
		die("--policy and --spill-at are for the spillway mode only");
	if (o.port <= 0 || o.port > 65535)
		die("--port is required (1..65535)");
	/* a power of two (spillway rings, io_uring CQs), big enough that
	 * every mode can split it into its queues */
	if (o.capacity < 8 || o.capacity > 4096 || (o.capacity & (o.capacity - 1)))
		die("--capacity must be a power of two in 8..4096");
	if (o.work_us < 0 || o.respawn_delay_ms < 0 || o.max_runtime_s <= 0)
		die("negative durations are not allowed");
}

int main(int argc, char **argv)
{
	long long ns0[NR_NETSTAT], ns1[NR_NETSTAT];
	sigset_t set;
	uint64_t deadline;
	char *mode_json = NULL;
	bool stopping = false;

	parse_args(argc, argv);
	master_pid = getpid();
	prctl(PR_SET_NAME, "spw-master");
	signal(SIGPIPE, SIG_IGN);

	/* handled synchronously with sigtimedwait() */
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGALRM);
	sigprocmask(SIG_BLOCK, &set, NULL);

	tcp_sock_bytes = read_tcp_sock_bytes();
	slots = mmap(NULL, sizeof(struct wslot) * (size_t)o.workers, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (slots == MAP_FAILED)
		die("mmap: %s", strerror(errno));

	read_netstat(ns0);
	o.mode->master_setup();

	for (int i = 0; i < o.workers; i++)
		spawn_worker(i);

	/* wait until every worker is set up (or one failed) */
	deadline = now_ns(CLOCK_MONOTONIC) + 10000000000ull;
	while (!all_ready()) {
		struct timespec ts = { 0, 5000000 };
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, &ts);

		if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
			stopping = true;
			break;
		}
		reap(true);
		for (int i = 0; i < o.workers; i++)
			if (!procs[i].pid)
				die("worker %d died during setup", i);
		if (now_ns(CLOCK_MONOTONIC) > deadline)
			die("workers not ready after 10 s");
	}
	if (!stopping) {
		write_pid_file();
		if (o.mode->master_ready)
			o.mode->master_ready();
		logmsg("%s: %d workers ready on 127.0.0.1:%d", o.mode->name, o.workers, o.port);
	}

	deadline = now_ns(CLOCK_MONOTONIC) + (uint64_t)o.max_runtime_s * 1000000000ull;
	while (!stopping) {
		struct timespec ts = { 0, 20000000 };
		bool pending_ready = false;
		siginfo_t si;
		uint64_t now;
		int sig = sigtimedwait(&set, &si, &ts);

		if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP)
			break;
		reap(false);
		now = now_ns(CLOCK_MONOTONIC);
		if (now > deadline) {
			logmsg("--max-runtime reached, shutting down");
			break;
		}
		for (int i = 0; i < o.workers; i++) {
			if (!procs[i].pid && procs[i].respawn_at && procs[i].respawn_at <= now) {
				respawns++;
				spawn_worker(i);
				logmsg("respawned worker %d as pid %d (generation %d)", i,
				       (int)procs[i].pid, slots[i].generation);
			}
			if (procs[i].pid && slots[i].ready != slots[i].generation)
				pending_ready = true;
		}
		/* rewrite the pid file once replacements are ready */
		if (!pending_ready && respawns) {
			static int written_for = 0;

			if (written_for != respawns) {
				written_for = respawns;
				write_pid_file();
			}
		}
	}

	/* shutdown: snapshot group counters, stop workers, write stats */
	if (o.mode->stats_json)
		mode_json = o.mode->stats_json();
	reap(true);
	for (int i = 0; i < o.workers; i++) {
		alive_at_stop[i] = procs[i].pid != 0;
		if (procs[i].pid) {
			kill(procs[i].pid, SIGTERM);
			kill(procs[i].pid, SIGCONT);	/* a stopped worker must see it */
		}
	}
	deadline = now_ns(CLOCK_MONOTONIC) + 2000000000ull;
	for (;;) {
		struct timespec ts = { 0, 10000000 };
		siginfo_t si;
		bool alive = false;

		reap(true);
		for (int i = 0; i < o.workers; i++)
			if (procs[i].pid)
				alive = true;
		if (!alive)
			break;
		if (now_ns(CLOCK_MONOTONIC) > deadline) {
			for (int i = 0; i < o.workers; i++)
				if (procs[i].pid)
					kill(procs[i].pid, SIGKILL);
			deadline = UINT64_MAX;
		}
		sigtimedwait(&set, &si, &ts);
	}
	read_netstat(ns1);
	write_stats(ns0, ns1, mode_json);
	free(mode_json);
	return 0;
}
