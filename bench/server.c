// SPDX-License-Identifier: MIT
/*
 * spw-bench-server: a pre-forking accept benchmark server.
 *
 * A master process creates the listening socket(s), forks N workers and
 * supervises them (nginx style). Each worker accepts connections with one
 * of four accept paths:
 *
 *   spillway   N SO_REUSEPORT listeners registered as one spillway group;
 *              each worker reaps its own accept completion ring.
 *   reuseport  N SO_REUSEPORT listeners, blocking accept4() per worker.
 *   uring      N SO_REUSEPORT listeners, io_uring multishot accept.
 *   epoll      one shared non-blocking listener, EPOLLEXCLUSIVE epoll_wait()
 *              per worker, accept4() until EAGAIN.
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
 * Build with -DSPW_BENCH_NO_SPILLWAY to leave out the spillway mode (no
 * libspillway needed); the mode then fails with exit status 3.
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

#include <liburing.h>
#ifndef SPW_BENCH_NO_SPILLWAY
#include <spillway.h>
#endif

#define MAX_WORKERS	256

enum mode { M_SPILLWAY, M_REUSEPORT, M_URING, M_EPOLL };
static const char *const mode_names[] = { "spillway", "reuseport", "uring", "epoll" };

enum work_kind { W_NONE, W_CPU, W_SLEEP };
static const char *const work_names[] = { "none", "cpu", "sleep" };

/* One slot per worker index, in shared memory. Only one process writes a
 * slot at a time (the current incarnation of that worker). */
struct wslot {
	int pid;		/* current incarnation */
	int generation;		/* incarnations started (1 = original) */
	int ready;		/* == generation once that incarnation is set up */
	int setup_error;	/* errno of a failed setup, 0 if fine */
	uint64_t accepted;	/* connections accepted (all incarnations) */
	uint64_t syscalls;	/* syscalls on the accept path */
	uint64_t accept_eagain;	/* accept4() calls that found nothing */
	uint64_t accept_errors;	/* other accept failures / error CQEs */
	uint64_t spilled;	/* spillway CQEs flagged SPW_CQE_F_SPILLED */
	uint64_t write_errors;	/* response send() failures */
	uint64_t read_errors;	/* no request: EOF or error before it */
	uint64_t max_batch;	/* most connections returned by one syscall */
	uint64_t rearms;	/* uring: multishot accept re-arms */
	uint64_t ring_bytes;	/* mapped ring bytes on the accept path */
	uint64_t queue_bound;	/* connections that can queue for this worker */
	uint64_t accept_mem_bytes; /* ring_bytes + queue_bound * tcp sock size */
	int64_t rss_before_kb;	/* VmRSS before accept-path setup */
	int64_t rss_after_kb;	/* VmRSS right after setup */
	int64_t rss_end_kb;	/* VmRSS when the worker stopped cleanly */
} __attribute__((aligned(64)));	/* no false sharing between workers */

struct opts {
	enum mode mode;
	int workers;
	int port;
	enum work_kind work;
	long work_us;
	int slow_worker;
	double slow_factor;
	int backlog;
	unsigned ring_entries;
	const char *stats_file;
	const char *pid_file;
	bool respawn;
	long respawn_delay_ms;
	long max_runtime_s;
	bool quiet;
};

static struct opts o = {
	.mode = M_REUSEPORT,
	.workers = 4,
	.port = 0,
	.work = W_NONE,
	.work_us = 0,
	.slow_worker = -1,
	.slow_factor = 1.0,
	.backlog = 128,
	.ring_entries = 64,
	.respawn = true,
	.respawn_delay_ms = 0,
	.max_runtime_s = 900,
};

static struct wslot *slots;
static int listen_fds[MAX_WORKERS];
static int nr_listen;
#ifndef SPW_BENCH_NO_SPILLWAY
static int group_fd = -1;
#endif
static pid_t master_pid;
static long tcp_sock_bytes;

/* worker state */
static volatile sig_atomic_t stop_flag;
static int my_index;
static struct wslot *me;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "spw-bench-server[%d]: ", (int)getpid());
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void logmsg(const char *fmt, ...)
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

static void sleep_us(long usec)
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

static void handle_conn(int fd)
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

static void note_batch(uint64_t n)
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
static void accept_failed(const char *what, int err)
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

static void accepted_one(void)
{
	me->accepted++;
	consecutive_errors = 0;
}

/* ---------------------------------------------------------------- */
/* accept paths                                                       */

static void loop_reuseport(int lfd)
{
	me->ring_bytes = 0;
	me->queue_bound = (uint64_t)o.backlog + 1;
	me->accept_mem_bytes = me->queue_bound * (uint64_t)tcp_sock_bytes;
	me->rss_after_kb = read_vmrss_kb();
	__atomic_store_n(&me->ready, me->generation, __ATOMIC_RELEASE);

	while (!stop_flag) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		me->syscalls++;
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				me->accept_eagain++;
				continue;
			}
			accept_failed("accept4", errno);
			continue;
		}
		accepted_one();
		note_batch(1);
		handle_conn(fd);
	}
}

static void loop_epoll(int lfd)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE };
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0)
		die("epoll_create1: %s", strerror(errno));
	ev.data.fd = lfd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		die("epoll_ctl(EPOLLEXCLUSIVE): %s", strerror(errno));

	me->ring_bytes = 0;
	/* one shared accept queue of backlog * workers: each worker's share */
	me->queue_bound = ((uint64_t)o.backlog * (uint64_t)o.workers + 1 + (uint64_t)o.workers - 1) /
			  (uint64_t)o.workers;
	me->accept_mem_bytes = me->queue_bound * (uint64_t)tcp_sock_bytes;
	me->rss_after_kb = read_vmrss_kb();
	__atomic_store_n(&me->ready, me->generation, __ATOMIC_RELEASE);

	while (!stop_flag) {
		struct epoll_event out;
		uint64_t batch = 0;
		int n = epoll_wait(ep, &out, 1, -1);

		me->syscalls++;
		if (n <= 0)
			continue;
		while (!stop_flag) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

			me->syscalls++;
			if (fd < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					me->accept_eagain++;
					break;
				}
				if (errno == EINTR)
					continue;
				accept_failed("accept4", errno);
				break;
			}
			accepted_one();
			batch++;
			handle_conn(fd);
		}
		note_batch(batch);
	}
	close(ep);
}

static void arm_multishot(struct io_uring *ring, int lfd)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	if (!sqe)
		die("io_uring_get_sqe: SQ full");
	io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, 1);
}

static void loop_uring(int lfd)
{
	struct io_uring_params p;
	struct io_uring ring;
	int ret;
	size_t ringsz;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = o.ring_entries ? o.ring_entries : 64;
	ret = io_uring_queue_init_params(4, &ring, &p);
	if (ret < 0) {
		me->setup_error = -ret;
		die("io_uring_queue_init_params: %s", strerror(-ret));
	}
	if (ring.features & IORING_FEAT_SINGLE_MMAP)
		ringsz = ring.sq.ring_sz > ring.cq.ring_sz ? ring.sq.ring_sz : ring.cq.ring_sz;
	else
		ringsz = ring.sq.ring_sz + ring.cq.ring_sz;
	ringsz += (size_t)ring.sq.ring_entries * sizeof(struct io_uring_sqe);
	me->ring_bytes = ringsz;
	/* listener accept queue, plus accepted fds parked in the CQ */
	me->queue_bound = (uint64_t)o.backlog + 1 + ring.cq.ring_entries;
	me->accept_mem_bytes = me->ring_bytes + me->queue_bound * (uint64_t)tcp_sock_bytes;

	arm_multishot(&ring, lfd);
	me->rss_after_kb = read_vmrss_kb();
	__atomic_store_n(&me->ready, me->generation, __ATOMIC_RELEASE);

	while (!stop_flag) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		int fds[64];
		int nfds = 0, cqe_err = 0;
		bool rearm = false;

		if (!io_uring_cq_ready(&ring)) {
			/* one io_uring_enter(): submits a pending re-arm and waits */
			ret = io_uring_submit_and_wait(&ring, 1);
			me->syscalls++;
			if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
				accept_failed("io_uring_submit_and_wait", -ret);
			continue;
		}
		io_uring_for_each_cqe(&ring, head, cqe) {
			n++;
			if (cqe->res >= 0)
				fds[nfds++] = cqe->res;
			else if (cqe->res != -ECANCELED)
				cqe_err = -cqe->res;
			if (!(cqe->flags & IORING_CQE_F_MORE))
				rearm = true;
			if (nfds == (int)(sizeof(fds) / sizeof(fds[0])))
				break;
		}
		io_uring_cq_advance(&ring, n);
		if (cqe_err)
			accept_failed("multishot accept CQE", cqe_err);
		if (rearm) {
			me->rearms++;
			arm_multishot(&ring, lfd);
		}
		note_batch((uint64_t)nfds);
		for (int i = 0; i < nfds; i++) {
			accepted_one();
			handle_conn(fds[i]);
		}
	}
	io_uring_queue_exit(&ring);
}

#ifndef SPW_BENCH_NO_SPILLWAY
static void loop_spillway(void)
{
	struct spw_ring ring;
	int ring_fd, ret;

	ring_fd = spw_ring_open(group_fd, (unsigned)my_index);
	if (ring_fd < 0) {
		me->setup_error = -ring_fd;
		die("spw_ring_open(member %d): %s", my_index, strerror(-ring_fd));
	}
	ret = spw_ring_init(&ring, ring_fd);
	if (ret < 0) {
		me->setup_error = -ret;
		die("spw_ring_init: %s", strerror(-ret));
	}
	spw_ring_set_accept_flags(&ring, SPW_ACCEPT_CLOEXEC);
	/* the worker needs only its ring */
	close(group_fd);
	group_fd = -1;

	me->ring_bytes = ring.map_len;
	me->queue_bound = ring.ring_entries;
	me->accept_mem_bytes = me->ring_bytes + me->queue_bound * (uint64_t)tcp_sock_bytes;
	me->rss_after_kb = read_vmrss_kb();
	__atomic_store_n(&me->ready, me->generation, __ATOMIC_RELEASE);

	while (!stop_flag) {
		struct spw_cqe *cqe;
		int fd;

		if (spw_peek_cqe(&ring, &cqe) != 0) {
			/* ring empty: one SPW_IOC_ENTER installs every pending
			 * connection and waits for at least one CQE */
			ret = spw_enter(&ring, 1, NULL);
			me->syscalls++;
			if (ret > 0)
				note_batch((uint64_t)ret);
			else if (ret < 0 && ret != -EINTR && ret != -ETIME && ret != -EAGAIN)
				accept_failed("spw_enter", -ret);
			continue;
		}
		/*
		 * Handle the connection while its CQE still occupies the ring,
		 * so ring occupancy (what the kernel spills on) is this
		 * worker's true backlog, including the connection in hand.
		 */
		fd = cqe->fd;
		if (cqe->flags & SPW_CQE_F_SPILLED)
			me->spilled++;
		if (fd >= 0) {
			accepted_one();
			handle_conn(fd);
		} else {
			accept_failed("spillway CQE", -fd);
		}
		spw_cqe_seen(&ring, cqe);
	}
	spw_ring_exit(&ring);
}
#endif

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
	int lfd = -1;

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

	/* keep only this worker's listener (the shared one for epoll) */
	for (int i = 0; i < nr_listen; i++) {
		if (o.mode == M_EPOLL || (o.mode != M_SPILLWAY && i == index))
			lfd = listen_fds[i];
		else
			close(listen_fds[i]);
	}

	me->rss_before_kb = read_vmrss_kb();
	switch (o.mode) {
	case M_REUSEPORT:
		loop_reuseport(lfd);
		break;
	case M_EPOLL:
		loop_epoll(lfd);
		break;
	case M_URING:
		loop_uring(lfd);
		break;
	case M_SPILLWAY:
#ifndef SPW_BENCH_NO_SPILLWAY
		loop_spillway();
#endif
		break;
	}
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

static int make_listener(bool reuseport, bool nonblock)
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
	/* --backlog is per worker: the one shared epoll listener gets N times
	 * as much, so every mode can queue the same number of connections */
	if (listen(fd, o.mode == M_EPOLL ? o.backlog * o.workers : o.backlog) < 0)
		die("listen: %s", strerror(errno));
	return fd;
}

static void json_u64(FILE *f, const char *k, uint64_t v, bool comma)
{
	fprintf(f, "\"%s\": %" PRIu64 "%s", k, v, comma ? ", " : "");
}

#ifndef SPW_BENCH_NO_SPILLWAY
static void json_member(FILE *f, const struct spw_member_stats *m)
{
	fprintf(f, "{");
	json_u64(f, "arrived", m->arrived, true);
	json_u64(f, "delivered", m->delivered, true);
	json_u64(f, "spilled_out", m->spilled_out, true);
	json_u64(f, "spilled_in", m->spilled_in, true);
	json_u64(f, "dropped", m->dropped, true);
	json_u64(f, "rehomed", m->rehomed, true);
	json_u64(f, "outstanding", m->outstanding, true);
	json_u64(f, "pending", m->pending, true);
	json_u64(f, "ring_entries", m->ring_entries, true);
	json_u64(f, "state", m->state, false);
	fprintf(f, "}");
}
#endif

static void write_stats(const long long *ns0, const long long *ns1, const char *spw_json)
{
	char tmp[PATH_MAX];
	uint64_t acc = 0, sys = 0, spl = 0, eag = 0, err = 0, werr = 0, rerr = 0;
	FILE *f;

	if (!o.stats_file)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", o.stats_file, (int)getpid());
	f = fopen(tmp, "we");
	if (!f)
		die("%s: %s", tmp, strerror(errno));
	fprintf(f, "{\"mode\": \"%s\", \"workers\": %d, \"port\": %d, \"backlog\": %d, "
		"\"ring_entries\": %u, \"work\": \"%s:%ld\", \"slow_worker\": %d, "
		"\"slow_factor\": %g, \"tcp_sock_bytes\": %ld, \"respawns\": %d, "
		"\"unexpected_exits\": %d, \"setup_failures\": %d,\n \"per_worker\": [",
		mode_names[o.mode], o.workers, o.port, o.backlog, o.ring_entries,
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
	fprintf(f, "},\n \"spillway\": %s}\n", spw_json ? spw_json : "null");
	if (fclose(f) != 0 || rename(tmp, o.stats_file) != 0)
		die("writing %s: %s", o.stats_file, strerror(errno));
}

/* Group counters as a JSON object (malloc'd), or NULL. */
static char *spillway_stats_json(void)
{
#ifndef SPW_BENCH_NO_SPILLWAY
	struct spw_member_stats *m;
	struct spw_group_stats st;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	int n;

	if (group_fd < 0)
		return NULL;
	m = calloc((size_t)o.workers, sizeof(*m));
	if (!m)
		return NULL;
	memset(&st, 0, sizeof(st));
	n = spw_group_stats_full(group_fd, &st, m, (unsigned)o.workers);
	f = open_memstream(&buf, &len);
	if (!f) {
		free(m);
		return NULL;
	}
	if (n < 0) {
		fprintf(f, "{\"error\": \"spw_group_stats_full: %s\"}", strerror(-n));
	} else {
		fprintf(f, "{\"nr_members\": %d, \"stale\": %" PRIu64 ", \"total\": ", n,
			(uint64_t)st.stale);
		json_member(f, &st.total);
		fprintf(f, ", \"members\": [");
		for (int i = 0; i < o.workers && i < n; i++) {
			if (i)
				fprintf(f, ", ");
			json_member(f, &m[i]);
		}
		fprintf(f, "]}");
	}
	fclose(f);
	free(m);
	return buf;
#else
	return NULL;
#endif
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
"usage: spw-bench-server --mode spillway|reuseport|uring|epoll --port P [options]\n"
"  --workers N            worker processes (default 4)\n"
"  --work none|cpu:USEC|sleep:USEC   per-connection work after the response\n"
"  --slow-worker I        worker index whose work is multiplied by --slow-factor\n"
"  --slow-factor F        (default 1)\n"
"  --backlog B            listen() backlog (default 128)\n"
"  --ring-entries E       spillway ring / io_uring CQ entries (default 64)\n"
"  --stats-file PATH      JSON counters written at shutdown (SIGTERM/SIGINT)\n"
"  --pid-file PATH        'master PID' and 'worker I PID GEN' lines, written when ready\n"
"  --no-respawn           do not replace workers that die\n"
"  --respawn-delay-ms D   wait D ms before replacing a dead worker (default 0)\n"
"  --max-runtime S        shut down by itself after S seconds (default 900)\n"
"  --quiet\n");
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
		{ "backlog", required_argument, NULL, 'b' },
		{ "ring-entries", required_argument, NULL, 'e' },
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
			for (int i = 0; i < 4; i++)
				if (!strcmp(optarg, mode_names[i])) {
					o.mode = (enum mode)i;
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
			o.backlog = (int)parse_long(optarg, "--backlog");
			break;
		case 'e':
			o.ring_entries = (unsigned)parse_long(optarg, "--ring-entries");
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
	if (o.port <= 0 || o.port > 65535)
		die("--port is required (1..65535)");
	if (o.backlog < 0)
		die("bad --backlog");
	if (o.work_us < 0 || o.respawn_delay_ms < 0 || o.max_runtime_s <= 0)
		die("negative durations are not allowed");
}

int main(int argc, char **argv)
{
	long long ns0[NR_NETSTAT], ns1[NR_NETSTAT];
	sigset_t set;
	uint64_t deadline;
	char *spw_json = NULL;
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
	switch (o.mode) {
	case M_EPOLL:
		listen_fds[0] = make_listener(false, true);
		nr_listen = 1;
		break;
	case M_SPILLWAY:
#ifdef SPW_BENCH_NO_SPILLWAY
		fprintf(stderr, "spw-bench-server: built without spillway support\n");
		return 3;
#else
		/* fall through */
#endif
	case M_REUSEPORT:
	case M_URING:
		for (int i = 0; i < o.workers; i++)
			listen_fds[i] = make_listener(true, false);
		nr_listen = o.workers;
		break;
	}
#ifndef SPW_BENCH_NO_SPILLWAY
	if (o.mode == M_SPILLWAY) {
		struct spw_group_params gp;

		memset(&gp, 0, sizeof(gp));
		gp.ring_entries = o.ring_entries;
		group_fd = spw_group_create(listen_fds, (unsigned)o.workers, &gp);
		if (group_fd < 0)
			die("spw_group_create: %s", strerror(-group_fd));
	}
#endif

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
		logmsg("%s: %d workers ready on 127.0.0.1:%d", mode_names[o.mode], o.workers, o.port);
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
	spw_json = spillway_stats_json();
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
	write_stats(ns0, ns1, spw_json);
	free(spw_json);
	return 0;
}
