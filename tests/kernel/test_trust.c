/* SPDX-License-Identifier: MIT */
/*
 * test_trust: what a careful operator needs before loading the module.
 * Each test reproduces one defect a review found (issue 7) and fails on
 * the module as it was before the fix:
 *   - other waiters on a member (poll, a blocking accept()) are woken
 *     while the group lives, and connections queued at teardown reach a
 *     waiter already asleep in accept();
 *   - a member may sit in a REUSEPORT_SOCKARRAY map (sk_user_data is not
 *     ours to take);
 *   - registration raises a listener's backlog no further than
 *     net.core.somaxconn, and a later listen() by the owner survives the
 *     group's close;
 *   - a member that stops listening retires its tokens and wedges nothing;
 *   - only the socket's owner (or CAP_NET_ADMIN) may register it;
 *   - ring memory is charged to the opener's memory cgroup;
 *   - a failed create disturbs no client;
 *   - a burst far larger than the rings is reset promptly and counted,
 *     and no drop walks the accept queue (a watchpoint counts the reads);
 *   - a signal restarts or interrupts an enter as it does accept(), and
 *     a timeout centuries away waits;
 *   - the stall timer stays armed while only stalled rings hold work.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

struct delayed_connect {
	uint16_t port;
	int delay_ms;
	unsigned n;
	int fds[64];
};

static void *connect_later(void *arg)
{
	struct delayed_connect *d = arg;

	usleep(d->delay_ms * 1000);
	for (unsigned i = 0; i < d->n; i++)
		d->fds[i] = t_connect_id(d->port, i);
	return NULL;
}

static void close_all(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/*
 * poll() re-checks readiness at its timeout, so "returned 1" proves
 * nothing: the return must come soon after the arrival, long before the
 * timeout.
 */
Test(waiters, poll_on_member_wakes_at_arrival, .timeout = 30)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	struct delayed_connect d = { .port = t_port(lfd), .delay_ms = 400, .n = 1 };
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	pthread_t th;
	long t0, took;

	t0 = t_now_ms();
	pthread_create(&th, NULL, connect_later, &d);
	cr_assert_eq(poll(&p, 1, 3000), 1);
	took = t_now_ms() - t0;
	pthread_join(th, NULL);
	cr_expect_lt(took, 2000, "poll returned after %ld ms (arrival at 400 ms)", took);
	close_all(d.fds, d.n);
	close(gfd);
	close(lfd);
}

static void set_rcvtimeo(int fd, int ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
}

Test(waiters, blocking_accept_on_member_wakes_at_arrival, .timeout = 30)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	struct delayed_connect d = { .port = t_port(lfd), .delay_ms = 400, .n = 1 };
	pthread_t th;
	long t0, took;
	int afd;

	set_rcvtimeo(lfd, 3000);	/* accept() honours SO_RCVTIMEO */
	t0 = t_now_ms();
	pthread_create(&th, NULL, connect_later, &d);
	afd = accept(lfd, NULL, NULL);
	took = t_now_ms() - t0;
	pthread_join(th, NULL);
	cr_assert_geq(afd, 0, "accept: %s after %ld ms", strerror(errno), took);
	cr_expect_lt(took, 2000, "accept returned after %ld ms (arrival at 400 ms)", took);
	cr_expect_eq(t_read_id(afd), 0u);
	close(afd);
	close_all(d.fds, d.n);
	close(gfd);
	close(lfd);
}

struct acceptor {
	int lfd;
	unsigned want, got;
	long last_ms;
};

static void *accept_loop(void *arg)
{
	struct acceptor *a = arg;

	while (a->got < a->want) {
		int fd = accept(a->lfd, NULL, NULL);

		if (fd < 0)
			break;	/* SO_RCVTIMEO expired */
		a->got++;
		a->last_ms = t_now_ms();
		close(fd);
	}
	return NULL;
}

/*
 * A thread is asleep in accept() before anything arrives; connections
 * arrive while the group lives (nobody consumes the ring) and the group
 * then closes. Every connection reaches the sleeper, by the close at the
 * latest.
 */
Test(waiters, queued_at_teardown_reach_a_sleeping_accept, .timeout = 30)
{
	enum { N = 6 };
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	struct acceptor a = { .lfd = lfd, .want = N };
	int cfd[N];
	pthread_t th;
	long closed;

	set_rcvtimeo(lfd, 4000);
	pthread_create(&th, NULL, accept_loop, &a);
	usleep(200 * 1000);
	for (unsigned i = 0; i < N; i++)
		cfd[i] = t_connect_id(t_port(lfd), i);
	usleep(200 * 1000);
	close(gfd);
	closed = t_now_ms();
	pthread_join(th, NULL);
	cr_expect_eq(a.got, (unsigned)N, "the sleeping accept() got %u of %u", a.got, N);
	cr_expect_lt(a.last_ms - closed, 1000, "last accept %ld ms after the close",
		     a.last_ms - closed);
	close_all(cfd, N);
	close(lfd);
}

static int bpf_sys(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

/* REUSEPORT_SOCKARRAY sets sk_user_data on its listeners: not ours to refuse. */
Test(coexist, member_of_a_reuseport_sockarray_joins_a_group, .timeout = 30)
{
	union bpf_attr attr;
	int lfd[2], cfd[4], gfd, map;
	struct spw_ring ring[2];
	unsigned got = 0;

	t_listeners(lfd, 2, true, 16);
	memset(&attr, 0, sizeof(attr));
	attr.map_type = BPF_MAP_TYPE_REUSEPORT_SOCKARRAY;
	attr.key_size = 4;
	attr.value_size = 8;
	attr.max_entries = 2;
	map = bpf_sys(BPF_MAP_CREATE, &attr);
	if (map < 0)
		cr_skip_test("no REUSEPORT_SOCKARRAY here: %s", strerror(errno));
	for (uint32_t k = 0; k < 2; k++) {
		uint64_t v = lfd[k];

		memset(&attr, 0, sizeof(attr));
		attr.map_fd = map;
		attr.key = (uintptr_t)&k;
		attr.value = (uintptr_t)&v;
		cr_assert_eq(bpf_sys(BPF_MAP_UPDATE_ELEM, &attr), 0, "map update: %s",
			     strerror(errno));
	}
	gfd = spw_group_create(lfd, 2, &(struct spw_group_params){
		.ring_entries = 8, .stall_ms = SPW_STALL_OFF });
	cr_assert_geq(gfd, 0, "a sockarray member cannot join: %s", strerror(-gfd));
	for (unsigned i = 0; i < 2; i++)
		t_ring(&ring[i], gfd, i);
	for (unsigned i = 0; i < 4; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	got = t_reap(&ring[0], 4, 3000, NULL);
	got += t_reap(&ring[1], 4 - got, 1000, NULL);
	cr_expect_eq(got, 4u);
	close_all(cfd, 4);
	for (unsigned i = 0; i < 2; i++) {
		spw_ring_exit(&ring[i]);
		close(lfd[i]);
	}
	close(gfd);
	close(map);
}

static unsigned max_ack_backlog(int lfd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	/* on a listener, tcpi_sacked is sk_max_ack_backlog */
	cr_assert_eq(getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
	return ti.tcpi_sacked;
}

static unsigned read_uint(const char *path)
{
	FILE *f = fopen(path, "r");
	unsigned v = 0;

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fscanf(f, "%u", &v), 1);
	fclose(f);
	return v;
}

/*
 * sk_max_ack_backlog also bounds the SYN queue, where SYN cookies start:
 * registration may raise it no further than the owner could (somaxconn).
 */
Test(backlog, raise_stops_at_somaxconn_and_owner_listen_wins, .timeout = 60)
{
	enum { M = 8 };
	unsigned somaxconn = read_uint("/proc/sys/net/core/somaxconn");
	int lfd[M], gfd;

	t_listeners(lfd, M, true, 16);
	gfd = spw_group_create(lfd, M, &(struct spw_group_params){
		.ring_entries = 32768, .stall_ms = SPW_STALL_OFF });
	cr_assert_geq(gfd, 0, "create: %s", strerror(-gfd));
	for (unsigned i = 0; i < M; i++) {
		unsigned b = max_ack_backlog(lfd[i]);

		cr_expect_leq(b, somaxconn, "member %u: backlog %u > somaxconn %u",
			      i, b, somaxconn);
		cr_expect_geq(b, 16u, "member %u: backlog %u lowered", i, b);
	}
	/* the owner changes its mind while the group lives; that sticks */
	cr_assert_eq(listen(lfd[0], 100), 0);
	close(gfd);
	cr_expect_eq(max_ack_backlog(lfd[0]), 100u, "owner's listen() clobbered");
	for (unsigned i = 1; i < M; i++)
		cr_expect_eq(max_ack_backlog(lfd[i]), 16u, "member %u not restored", i);
	close_all(lfd, M);
}

static int enter_nowait(struct spw_ring *r)
{
	return spw_enter(r, 0, NULL);
}

/*
 * shutdown(SHUT_RD) on a listener (a common drain pattern) stops it
 * listening and flushes its queue: its tokens must retire, and the other
 * member keeps flowing with no enter failing.
 */
Test(drain, member_that_stops_listening_wedges_nothing, .timeout = 60)
{
	enum { Q = 8 };
	int lfd[2], cfd[3 * Q], gfd, fails = 0;
	struct spw_ring ring[2];
	struct spw_member_stats ms[2];
	unsigned got = 0;

	t_listeners(lfd, 2, false, 64);
	gfd = t_group(lfd, 2, 64);
	for (unsigned i = 0; i < 2; i++)
		t_ring(&ring[i], gfd, i);
	for (unsigned i = 0; i < Q; i++) {
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
		cfd[Q + i] = t_connect_id(t_port(lfd[1]), 100 + i);
	}
	for (long end = t_now_ms() + 3000; t_now_ms() < end; usleep(5000)) {
		cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
		if (ms[0].arrived + ms[1].arrived == 2 * Q)
			break;
	}
	cr_assert_eq(shutdown(lfd[0], SHUT_RD), 0);
	for (unsigned i = 0; i < Q; i++)
		cfd[2 * Q + i] = t_connect_id(t_port(lfd[1]), 200 + i);

	for (long end = t_now_ms() + 1500; t_now_ms() < end && got < 2 * Q;) {
		for (unsigned i = 0; i < 2; i++) {
			int ret = enter_nowait(&ring[i]);

			if (ret < 0)
				fails++;
			got += t_drain(&ring[i]);
		}
		usleep(10000);
	}
	cr_expect_eq(fails, 0, "%d enters failed", fails);
	cr_expect_eq(got, 2u * Q, "member 1's %u connections: got %u", 2 * Q, got);
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].pending + ms[1].pending, 0u, "tokens left behind");
	close_all(cfd, 3 * Q);
	for (unsigned i = 0; i < 2; i++) {
		spw_ring_exit(&ring[i]);
		close(lfd[i]);
	}
	close(gfd);
}

/* A listener created by root, registered by a process that became nobody. */
Test(creds, only_the_owner_or_net_admin_registers, .timeout = 30)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int status;
	pid_t pid;

	pid = fork();
	if (!pid) {
		int gfd, own, rc = 0;

		if (setgid(65534) || setuid(65534))
			_exit(10);
		gfd = spw_group_create(&lfd, 1, NULL);
		if (gfd != -EPERM)
			rc |= 1;	/* root's socket: refused */
		if (gfd >= 0)
			close(gfd);
		own = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sin = { .sin_family = AF_INET,
					   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (bind(own, (void *)&sin, sizeof(sin)) || listen(own, 8))
			_exit(11);
		gfd = spw_group_create(&own, 1, NULL);
		if (gfd < 0)
			rc |= 2;	/* its own socket: fine */
		else
			close(gfd);
		close(own);
		_exit(rc);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status));
	cr_expect_eq(WEXITSTATUS(status) & 1, 0, "nobody registered root's listener");
	cr_expect_eq(WEXITSTATUS(status) & 2, 0, "nobody could not register its own");
	cr_expect_lt(WEXITSTATUS(status), 10, "child set-up failed");
	close(lfd);
}

static long cg_read(const char *cg, const char *file)
{
	char path[256];
	FILE *f;
	long v = -1;

	snprintf(path, sizeof(path), "%s/%s", cg, file);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static int cg_write(const char *cg, const char *file, const char *val)
{
	char path[256];
	int fd, n;

	snprintf(path, sizeof(path), "%s/%s", cg, file);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	close(fd);
	return n < 0 ? -errno : 0;
}

/*
 * A 32768-entry ring maps 2 MiB (32768 CQEs of 64 bytes). Its memory
 * is the opener's: charged to the opener's memory cgroup, and past
 * memory.max ring opens fail with -ENOMEM while the rest of the machine
 * is untouched.
 */
Test(memcg, ring_memory_is_charged_and_limited, .timeout = 60)
{
	char cg[128], pidbuf[32];
	int lfd[4], status;
	pid_t pid;

	if (access("/sys/fs/cgroup/cgroup.controllers", R_OK))
		cr_skip_test("no cgroup v2 here");
	cg_write("/sys/fs/cgroup", "cgroup.subtree_control", "+memory");
	snprintf(cg, sizeof(cg), "/sys/fs/cgroup/spw-memcg-%d", getpid());
	cr_assert(!mkdir(cg, 0755) || errno == EEXIST, "mkdir %s: %s", cg, strerror(errno));
	if (cg_read(cg, "memory.current") < 0)
		cr_skip_test("no memory controller here");
	cr_assert_eq(cg_write(cg, "memory.max", "16M"), 0);
	t_listeners(lfd, 4, true, 16);

	pid = fork();
	if (!pid) {
		int gfd, rfd[4], rc = 0, opened = 0;
		long before, after;

		snprintf(pidbuf, sizeof(pidbuf), "%d", getpid());
		if (cg_write(cg, "cgroup.procs", pidbuf))
			_exit(20);
		gfd = spw_group_create(lfd, 4, &(struct spw_group_params){
			.ring_entries = 32768, .stall_ms = SPW_STALL_OFF });
		if (gfd < 0)
			_exit(21);
		before = cg_read(cg, "memory.current");
		rfd[0] = spw_ring_open(gfd, 0);
		after = cg_read(cg, "memory.current");
		if (rfd[0] < 0)
			_exit(22);
		opened = 1;
		/* the ring's pages (2 MiB) are the opener's */
		if (after - before < 3 * 512 * 1024)
			rc |= 1;
		/*
		 * Lower the limit to what is used plus 1 MiB (room for the
		 * child's own pages): the next 2 MiB ring cannot fit.
		 */
		snprintf(pidbuf, sizeof(pidbuf), "%ld", after + 1024 * 1024);
		if (cg_write(cg, "memory.max", pidbuf))
			_exit(23);
		for (int i = 1; i < 4; i++) {
			rfd[i] = spw_ring_open(gfd, i);
			if (rfd[i] >= 0)
				opened++;
			else if (rfd[i] != -ENOMEM)
				rc |= 4;
		}
		if (opened == 4)
			rc |= 2;	/* nothing was refused */
		_exit(rc);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "child died (signal %d): OOM-killed?",
		  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	cr_expect_lt(WEXITSTATUS(status), 20, "child set-up step %d failed",
		     WEXITSTATUS(status));
	cr_expect_eq(WEXITSTATUS(status) & 1, 0, "ring memory not charged to the memcg");
	cr_expect_eq(WEXITSTATUS(status) & 2, 0, "rings opened past memory.max");
	cr_expect_eq(WEXITSTATUS(status) & 4, 0, "a refused open was not -ENOMEM");
	close_all(lfd, 4);
	rmdir(cg);
}

struct flood {
	uint16_t port;
	volatile int stop;
	unsigned made, reset;
	int fds[512];
};

static void *flood_connect(void *arg)
{
	struct flood *f = arg;

	while (!f->stop && f->made < 512) {
		f->fds[f->made++] = t_connect(AF_INET, f->port);
		usleep(500);
	}
	return NULL;
}

/*
 * Create fails after the first member is hooked (the second is already
 * in a group): connections arriving in that window must not be placed,
 * let alone reset by the failed group's teardown.
 */
Test(create, failed_create_resets_nobody, .timeout = 60)
{
	int lfd[2], other, busy_gfd, fails = 0;
	struct flood f = { 0 };
	pthread_t th;

	lfd[0] = t_listener(AF_INET, 0, false, 4096);
	lfd[1] = t_listener(AF_INET, 0, false, 16);
	other = lfd[1];
	busy_gfd = t_group(&other, 1, 1);	/* lfd[1] is taken */
	/* more queued on lfd[0] than two 1-entry rings hold: drops if placed */
	for (unsigned i = 0; i < 8; i++)
		f.fds[f.made++] = t_connect(AF_INET, t_port(lfd[0]));
	f.port = t_port(lfd[0]);
	pthread_create(&th, NULL, flood_connect, &f);
	for (long end = t_now_ms() + 3000; t_now_ms() < end;) {
		int gfd = spw_group_create(lfd, 2, &(struct spw_group_params){
			.ring_entries = 1, .stall_ms = SPW_STALL_OFF });

		cr_assert_eq(gfd, -EBUSY, "create: %d", gfd);
		fails++;
	}
	f.stop = 1;
	pthread_join(th, NULL);
	for (unsigned i = 0; i < f.made; i++)
		if (t_was_reset(f.fds[i], 0))
			f.reset++;
	cr_expect_eq(f.reset, 0u, "%u of %u clients reset by %d failed creates",
		     f.reset, f.made, fails);
	/* and plain accept() still has every one of them */
	int fl = fcntl(lfd[0], F_GETFL);

	fcntl(lfd[0], F_SETFL, fl | O_NONBLOCK);
	unsigned accepted = 0;

	for (int fd; (fd = accept(lfd[0], NULL, NULL)) >= 0; accepted++)
		close(fd);
	cr_expect_eq(accepted, f.made - f.reset);
	close_all(f.fds, f.made);
	close(busy_gfd);
	close_all(lfd, 2);
}

struct burst {
	uint16_t port;
	unsigned n, resets, made;
	long worst_ms;
	int fds[400];
};

static void *burst_connect(void *arg)
{
	struct burst *b = arg;

	for (unsigned i = 0; i < b->n; i++) {
		int fd = t_try_connect(b->port);

		b->fds[b->made++] = fd;
	}
	return NULL;
}

/*
 * Nobody consumes; a burst 50 times the group's capacity arrives. Every
 * connection beyond the capacity is reset (counted as dropped) promptly
 * and the survivors are still served. Each drop is O(1): kernel_accept()
 * of one connection, no walk of the accept queue.
 */
Test(drop, burst_far_beyond_the_rings, .timeout = 120)
{
	enum { M = 2, E = 4, CAP = M * E, PER = 200, THREADS = 2 };
	int lfd[M], gfd;
	struct spw_ring ring[M];
	struct spw_member_stats ms[M];
	struct burst b[THREADS];
	pthread_t th[THREADS];
	unsigned resets = 0, alive = 0, got = 0;
	struct rlimit rl = { 4096, 4096 };

	setrlimit(RLIMIT_NOFILE, &rl);
	t_listeners(lfd, M, true, 16);
	gfd = t_group(lfd, M, E);
	for (unsigned i = 0; i < M; i++)
		t_ring(&ring[i], gfd, i);
	for (unsigned t = 0; t < THREADS; t++) {
		memset(&b[t], 0, sizeof(b[t]));
		b[t].port = t_port(lfd[0]);
		b[t].n = PER;
		pthread_create(&th[t], NULL, burst_connect, &b[t]);
	}
	for (unsigned t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	/*
	 * Every connection is either reset within 2 s or still alive. A
	 * reset reads as ECONNRESET once (then EOF), so each fd is checked
	 * until it is seen reset, never again after.
	 */
	static bool dead[THREADS][PER];

	for (long end = t_now_ms() + 2000;;) {
		for (unsigned t = 0; t < THREADS; t++)
			for (unsigned i = 0; i < b[t].made; i++)
				if (!dead[t][i] &&
				    (b[t].fds[i] < 0 || t_was_reset(b[t].fds[i], 0))) {
					dead[t][i] = true;
					resets++;
				}
		if (resets >= THREADS * PER - CAP || t_now_ms() > end)
			break;
		usleep(20000);
	}
	alive = THREADS * PER - resets;
	cr_expect_eq(alive, (unsigned)CAP, "%u alive, rings hold %u", alive, CAP);
	cr_assert_eq(spw_group_stats(gfd, ms, M), M);
	cr_expect_eq(ms[0].dropped + ms[1].dropped, resets, "dropped %llu+%llu, reset %u",
		     (unsigned long long)ms[0].dropped, (unsigned long long)ms[1].dropped,
		     resets);
	for (unsigned i = 0; i < M; i++)
		got += t_reap(&ring[i], E, 3000, NULL);
	cr_expect_eq(got, (unsigned)CAP, "survivors served: %u of %u", got, CAP);
	for (unsigned t = 0; t < THREADS; t++)
		for (unsigned i = 0; i < b[t].made; i++)
			if (b[t].fds[i] >= 0)
				close(b[t].fds[i]);
	for (unsigned i = 0; i < M; i++) {
		spw_ring_exit(&ring[i]);
		close(lfd[i]);
	}
	close(gfd);
}

/*
 * Watching the kernel's accept queue from a test. A drop's cost cannot be
 * asserted as a time, so the next test counts memory accesses instead:
 * kprobe events name each request sock as TCP queues it on the listener,
 * and a hardware watchpoint (perf, PERF_TYPE_BREAKPOINT) counts every read
 * or write of one queued request's dl_next link. A drop that walks the
 * queue reads every link it passes; one that takes the head reads only
 * the head's.
 */
struct kq {
	char inst[96];		/* our own trace instance */
	char grp[32];		/* our kprobe event group */
	uint64_t sk;		/* the listener, as the kernel knows it */
	uint64_t req[128];	/* request socks queued on it, in order */
	unsigned nreq;
};

static const char tracefs_dir[] = "/sys/kernel/tracing";

static bool kq_write(const char *file, const char *text)
{
	char path[192];
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/%s", tracefs_dir, file);
	fd = open(path, O_WRONLY | O_APPEND);
	if (fd < 0)
		return false;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text);
}

/* The kernel address of the TCP listener on @port, from /proc/net/tcp. */
static uint64_t kq_listener(uint16_t port)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	char line[512];
	uint64_t sk = 0;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned lport, st;
		unsigned long long p;

		/* sl local rem st tx:rx tr:when retr uid timeout inode ref sk */
		if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*d %*u %*d %llx",
			   &lport, &st, &p) == 3 && lport == port && st == 0x0a)
			sk = p;
	}
	fclose(f);
	return sk;
}

/*
 * Record every request sock TCP hands to the listener on @port from now
 * on. Skips the test where the kernel has no kprobe events. Addresses and
 * kprobes are root-only views; the guest runs the tests as root.
 */
static void kq_start(struct kq *q, uint16_t port)
{
	char cmd[256];

	memset(q, 0, sizeof(*q));
	snprintf(cmd, sizeof(cmd), "%s/kprobe_events", tracefs_dir);
	if (access(cmd, W_OK))
		cr_skip_test("no kprobe events in this kernel");
	/* kptr_restrict 1: %pK shows real addresses to CAP_SYSLOG */
	int fd = open("/proc/sys/kernel/kptr_restrict", O_WRONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "1", 1), 1);
	close(fd);
	/*
	 * Plain int3 probes only: an optimised probe is a jump patched in
	 * with text_poke_bp(), live text patching that a multi-threaded TCG
	 * vCPU can run into (see the memcg note in tests/vm/run).
	 */
	fd = open("/proc/sys/debug/kprobes-optimization", O_WRONLY);
	if (fd >= 0) {
		cr_assert_eq(write(fd, "0", 1), 1);
		close(fd);
	}
	q->sk = kq_listener(port);
	cr_assert_neq(q->sk, 0, "no address for the listener in /proc/net/tcp");
	snprintf(q->grp, sizeof(q->grp), "spwtest%d", getpid());
	snprintf(q->inst, sizeof(q->inst), "%s/instances/%s", tracefs_dir, q->grp);
	cr_assert_eq(mkdir(q->inst, 0700), 0, "%s: %s", q->inst, strerror(errno));
	/* inet_csk_complete_hashdance(sk, child, req, own_req): queues req */
	snprintf(cmd, sizeof(cmd),
		 "p:%s/qadd inet_csk_complete_hashdance sk=$arg1:x64 req=$arg3:x64\n",
		 q->grp);
	cr_assert(kq_write("kprobe_events", cmd), "kprobe_events: %s", strerror(errno));
	snprintf(cmd, sizeof(cmd), "instances/%s/events/%s/qadd/enable", q->grp, q->grp);
	cr_assert(kq_write(cmd, "1"), "enable: %s", strerror(errno));
}

/* Stop recording; fill q->req with the listener's requests, in order. */
static void kq_collect(struct kq *q)
{
	char path[192], line[512], cmd[160];
	FILE *f;

	snprintf(cmd, sizeof(cmd), "instances/%s/events/%s/qadd/enable", q->grp, q->grp);
	cr_assert(kq_write(cmd, "0"));
	snprintf(path, sizeof(path), "%s/trace", q->inst);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long sk, req;
		char *p = strstr(line, " sk=0x");

		if (p && sscanf(p, " sk=0x%llx req=0x%llx", &sk, &req) == 2 &&
		    sk == q->sk && q->nreq < 128)
			q->req[q->nreq++] = req;
	}
	fclose(f);
}

/*
 * Which 8-byte words of request @i hold the address of request @i + 1, the
 * next one queued: a bit mask of word indexes. A kprobe event that fetches
 * the words (at fixed addresses) fires on a getppid().
 */
static uint64_t kq_words_naming_next(struct kq *q, unsigned i)
{
	enum { WORDS = 64 };
	char cmd[WORDS * 40 + 128], path[192], line[WORDS * 40 + 512];
	uint64_t a = q->req[i], next = q->req[i + 1], mask = 0;
	size_t len;
	FILE *f;

	cr_assert_lt(i + 1, q->nreq);
	len = snprintf(cmd, sizeof(cmd), "p:%s/peek%u __x64_sys_getppid", q->grp, i);
	for (unsigned w = 0; w < WORDS; w++)
		len += snprintf(cmd + len, sizeof(cmd) - len, " w%u=@0x%llx:x64", w,
				(unsigned long long)(a + 8 * w));
	snprintf(cmd + len, sizeof(cmd) - len, "\n");
	cr_assert(kq_write("kprobe_events", cmd), "peek probe: %s", strerror(errno));
	snprintf(path, sizeof(path), "instances/%s/events/%s/peek%u/enable", q->grp, q->grp, i);
	cr_assert(kq_write(path, "1"));
	syscall(SYS_getppid);
	cr_assert(kq_write(path, "0"));
	snprintf(path, sizeof(path), "%s/trace", q->inst);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	snprintf(cmd, sizeof(cmd), " peek%u: ", i);
	while (fgets(line, sizeof(line), f)) {
		if (!strstr(line, cmd))
			continue;
		for (unsigned w = 0; w < WORDS; w++) {
			char key[16];
			char *p;
			unsigned long long v;

			snprintf(key, sizeof(key), " w%u=0x", w);
			p = strstr(line, key);
			if (p && sscanf(p + strlen(key), "%llx", &v) == 1 && v == next)
				mask |= 1ULL << w;
		}
		break;
	}
	fclose(f);
	snprintf(cmd, sizeof(cmd), "-:%s/peek%u\n", q->grp, i);
	kq_write("kprobe_events", cmd);
	return mask;
}

/*
 * The offset of dl_next in struct request_sock on this kernel, found at
 * run time (the layout differs between kernels and configs): the lowest
 * word that names the next queued request in two consecutive requests.
 * dl_next is the first field after the sock_common. Other words can name
 * the next request too: a stale hash-chain pointer in one request on
 * stock 6.12, a word at +344 of every request on the debug kernels. A
 * wrong pick fails the test: the accept that takes the watched request
 * must access its link.
 */
static unsigned kq_link_offset(struct kq *q, unsigned i)
{
	uint64_t m1, m2, both;

	cr_assert_geq(i, 1u);
	m1 = kq_words_naming_next(q, i - 1);
	m2 = kq_words_naming_next(q, i);
	both = m1 & m2;
	cr_assert_neq(both, 0, "no word names the next request in both %u and %u "
		      "(%#llx, %#llx)", i - 1, i, (unsigned long long)m1,
		      (unsigned long long)m2);
	if (both & (both - 1))
		cr_log_info("words naming the next request in both: %#llx; taking the lowest",
			    (unsigned long long)both);
	return 8 * __builtin_ctzll(both);
}

static void kq_end(struct kq *q)
{
	char cmd[96];

	snprintf(cmd, sizeof(cmd), "-:%s/qadd\n", q->grp);
	kq_write("kprobe_events", cmd);
	rmdir(q->inst);
}

/* Count every access to the 8 bytes at kernel address @addr, on every CPU. */
static unsigned kq_watch(uint64_t addr, int *fds, unsigned max)
{
	struct perf_event_attr pa = {
		.type = PERF_TYPE_BREAKPOINT,
		.size = sizeof(pa),
		.bp_type = HW_BREAKPOINT_RW,
		.bp_addr = addr,
		.bp_len = HW_BREAKPOINT_LEN_8,
	};
	unsigned n = 0;

	for (long cpu = 0; cpu < sysconf(_SC_NPROCESSORS_ONLN) && n < max; cpu++) {
		int fd = syscall(SYS_perf_event_open, &pa, -1, (int)cpu, -1, 0);

		cr_assert_geq(fd, 0, "watchpoint on cpu %ld: %s", cpu, strerror(errno));
		fds[n++] = fd;
	}
	return n;
}

static uint64_t kq_hits(const int *fds, unsigned n)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < n; i++) {
		uint64_t v;

		cr_assert_eq(read(fds[i], &v, sizeof(v)), (ssize_t)sizeof(v));
		sum += v;
	}
	return sum;
}

/*
 * A drop walks no queue (O(1) per drop). The ring is filled, so the
 * listener's queue holds E connections; one of them, deep in the queue,
 * is watched; D more arrive and are dropped. Dropping the newest would
 * walk the queue from the head and read the watched link once per drop
 * (D reads); taking the head reads none of it. Then the consumer accepts
 * up to the watched request: that accept reads its link, which shows the
 * watchpoint sees the kernel's accesses.
 *
 * The bound is D / 8, not 0: about one run in seven under --jobs=2, TCG
 * reported 2 hits whose sampled IP was a store in tcp_conn_request() to
 * a new request sock, nowhere near the watched word (see
 * docs/reliability.md). A walk reads the link on (nearly) every drop.
 */
Test(drop, each_drop_reads_no_queued_link, .timeout = 120)
{
	enum { E = 64, D = 32, P = 48 };
	int lfd, gfd, fds[E + D], wfd[16];
	unsigned nw, made = 0;
	uint64_t during, after;
	struct spw_member_stats ms;
	struct spw_ring ring;
	struct kq q;
	unsigned off;

	t_listeners(&lfd, 1, false, 256);
	gfd = t_group(&lfd, 1, E);
	t_ring(&ring, gfd, 0);
	kq_start(&q, t_port(lfd));
	for (; made < E; made++)
		fds[made] = t_connect(AF_INET, t_port(lfd));
	for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(20000)) {
		cr_assert_eq(spw_group_stats(gfd, &ms, 1), 1);
		if (ms.arrived >= E)
			break;
	}
	kq_collect(&q);
	cr_assert_eq(q.nreq, (unsigned)E, "%u requests seen queued, %u made", q.nreq, E);
	off = kq_link_offset(&q, P - 1);
	nw = kq_watch(q.req[P - 1] + off, wfd, 16);

	for (; made < E + D; made++)
		fds[made] = t_try_connect(t_port(lfd));
	for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(20000)) {
		cr_assert_eq(spw_group_stats(gfd, &ms, 1), 1);
		if (ms.dropped >= D)
			break;
	}
	during = kq_hits(wfd, nw);
	cr_expect_eq(ms.dropped, (uint64_t)D, "dropped %llu of %u",
		     (unsigned long long)ms.dropped, D);
	cr_expect_leq(during, D / 8, "%llu accesses to the link of queued connection %u in %u drops",
		      (unsigned long long)during, P, D);
	/* the drops took 1..D: P - D accepts reach request P */
	cr_expect_eq(t_reap(&ring, P - D, 3000, NULL), (unsigned)(P - D));
	after = kq_hits(wfd, nw);
	for (unsigned i = 0; i < nw; i++)
		close(wfd[i]);
	cr_expect_gt(after, during, "the watchpoint missed the accept that took request %u", P);
	cr_log_info("link at +%u: %llu accesses in %u drops, %llu by the accepts",
		    off, (unsigned long long)during, D, (unsigned long long)(after - during));
	kq_end(&q);
	spw_ring_exit(&ring);
	close_all(fds, made);
	close(gfd);
	close(lfd);
}

static uint16_t csum16(const void *data, size_t len, uint32_t sum)
{
	const uint8_t *p = data;

	for (; len > 1; len -= 2, p += 2)
		sum += (p[0] << 8) | p[1];
	if (len)
		sum += p[0] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

#define SYN_NET		0xc0000200	/* 192.0.2.0/24, TEST-NET-1 */
#define SYN_LISTENER	(SYN_NET | 254)

/* One bare SYN from @src:@sport to SYN_LISTENER:@dport through a raw socket. */
static void send_syn(int raw, uint32_t src, uint16_t sport, uint16_t dport)
{
	struct {
		struct iphdr ip;
		struct tcphdr tcp;
	} pkt;
	struct {
		uint32_t src, dst;
		uint8_t zero, proto;
		uint16_t len;
		struct tcphdr tcp;
	} ph;
	struct sockaddr_in to = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(SYN_LISTENER) };

	memset(&pkt, 0, sizeof(pkt));
	pkt.ip.version = 4;
	pkt.ip.ihl = 5;
	pkt.ip.ttl = 64;
	pkt.ip.protocol = IPPROTO_TCP;
	pkt.ip.tot_len = htons(sizeof(pkt));
	pkt.ip.saddr = htonl(src);
	pkt.ip.daddr = htonl(SYN_LISTENER);
	pkt.tcp.source = htons(sport);
	pkt.tcp.dest = htons(dport);
	pkt.tcp.seq = htonl(0x1000 + sport);
	pkt.tcp.doff = 5;
	pkt.tcp.syn = 1;
	pkt.tcp.window = htons(65535);
	memset(&ph, 0, sizeof(ph));
	ph.src = pkt.ip.saddr;
	ph.dst = pkt.ip.daddr;
	ph.proto = IPPROTO_TCP;
	ph.len = htons(sizeof(pkt.tcp));
	ph.tcp = pkt.tcp;
	pkt.tcp.check = htons(csum16(&ph, sizeof(ph), 0));
	pkt.ip.check = htons(csum16(&pkt.ip, sizeof(pkt.ip), 0));
	cr_assert_eq(sendto(raw, &pkt, sizeof(pkt), 0, (void *)&to, sizeof(to)),
		     (ssize_t)sizeof(pkt), "sendto: %s", strerror(errno));
}

static long netstat_counter(const char *name)
{
	char keys[4096], vals[4096];
	FILE *f = fopen("/proc/net/netstat", "r");
	long v = -1;

	cr_assert_not_null(f);
	while (fgets(keys, sizeof(keys), f) && fgets(vals, sizeof(vals), f)) {
		char *ks, *vs, *k = strtok_r(keys, " \n", &ks), *x = strtok_r(vals, " \n", &vs);

		for (; k && x; k = strtok_r(NULL, " \n", &ks), x = strtok_r(NULL, " \n", &vs))
			if (!strcmp(k, name))
				v = atol(x);
	}
	fclose(f);
	return v;
}

/* Request socks (SYN_RECV) for local port @port, from /proc/net/tcp. */
static unsigned syn_recv_count(uint16_t port)
{
	char line[512];
	unsigned n = 0, lport, st;
	FILE *f = fopen("/proc/net/tcp", "r");

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, " %*u: %*x:%x %*x:%*x %x", &lport, &st) == 2 &&
		    lport == port && st == 3)
			n++;
	fclose(f);
	return n;
}

/*
 * A SYN flood against a member: SYN cookies start where the owner's
 * backlog (at most somaxconn) says, not members x entries later. The
 * members listen on 192.0.2.254, an address of a dummy device inside the
 * guest (which has no network device that leaves it); the flood comes
 * through a raw socket from 192.0.2.1-250 (TEST-NET-1), so the SYN-ACKs
 * go into the dummy device and vanish: nothing answers them. (A listener
 * on 127.0.0.1 cannot answer a non-loopback source at all.)
 */
static int syn_listener(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(SYN_LISTENER) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (void *)&a, sizeof(a)), 0, "bind: %s", strerror(errno));
	cr_assert_eq(listen(fd, 16), 0);
	return fd;
}

Test(backlog, syn_cookies_start_where_the_owner_said, .timeout = 120)
{
	enum { M = 2, SYNS = 6000 };
	unsigned somaxconn = read_uint("/proc/sys/net/core/somaxconn");
	int lfd[M], gfd, raw;
	long cookies0, cookies1;
	unsigned queued;

	if (system("export PATH=/usr/sbin:/sbin:$PATH; modprobe -q dummy; "
		   "ip link add spwdummy0 type dummy && ip link set spwdummy0 up && "
		   "ip addr add 192.0.2.254/24 dev spwdummy0"))
		cr_skip_test("no dummy device to swallow SYN-ACKs");
	cr_assert_leq(somaxconn, (unsigned)SYNS - 1000, "somaxconn %u too big", somaxconn);
	for (unsigned i = 0; i < M; i++)
		lfd[i] = syn_listener();
	gfd = spw_group_create(lfd, M, &(struct spw_group_params){
		.ring_entries = 32768, .stall_ms = SPW_STALL_OFF });
	cr_assert_geq(gfd, 0);
	raw = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	cr_assert_geq(raw, 0, "raw socket: %s", strerror(errno));
	cookies0 = netstat_counter("SyncookiesSent");
	for (unsigned i = 0; i < SYNS; i++)
		send_syn(raw, SYN_NET | (1 + i % 250), 1024 + i, t_port(lfd[0]));
	usleep(300 * 1000);
	cookies1 = netstat_counter("SyncookiesSent");
	queued = syn_recv_count(t_port(lfd[0]));
	/*
	 * TCP starts cookies once the SYN queue reaches the backlog; request
	 * socks racing that check on two CPUs may pass it by a few percent.
	 * Before the fix the limit was members x entries (65552 here), so
	 * all 6000 SYNs were queued.
	 */
	cr_expect_leq(max_ack_backlog(lfd[0]), somaxconn);
	cr_expect_leq(queued, max_ack_backlog(lfd[0]) * 9 / 8,
		      "%u request socks queued, backlog %u, somaxconn %u",
		      queued, max_ack_backlog(lfd[0]), somaxconn);
	cr_expect_gt(cookies1 - cookies0, 0, "no SYN cookies after %u SYNs (%u queued)",
		     SYNS, queued);
	close(raw);
	close(gfd);
	close_all(lfd, M);
	cr_expect_eq(system("PATH=/usr/sbin:/sbin:$PATH ip link del spwdummy0"), 0);
}

struct plain_acceptor {
	int lfd;
	volatile int stop;
	unsigned long accepted;
};

static void *plain_accept_loop(void *arg)
{
	struct plain_acceptor *a = arg;

	while (!a->stop) {
		int fd = accept4(a->lfd, NULL, NULL, SOCK_NONBLOCK);

		if (fd >= 0) {
			a->accepted++;
			close(fd);
		} else {
			usleep(100);
		}
	}
	return NULL;
}

/*
 * Drops race a plain accept() on the member: a drop that finds nothing to
 * reset is stale, not also dropped, and the counters balance:
 * arrived == delivered + dropped + stale + pending + dropping.
 */
Test(counters, drops_racing_plain_accept_balance, .timeout = 120)
{
	int lfd = t_listener(AF_INET, 0, false, 128);
	int gfd = t_group(&lfd, 1, 1);
	struct plain_acceptor a = { .lfd = lfd };
	struct spw_group_stats st;
	const struct spw_member_stats *t = &st.total;
	struct spw_ring ring;
	pthread_t th;
	long long off;

	t_ring(&ring, gfd, 0);	/* opened, never entered: one token fills it */
	fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
	pthread_create(&th, NULL, plain_accept_loop, &a);
	/* until some drop has raced a plain accept (stale), at most 30 s */
	for (long end = t_now_ms() + 30000; t_now_ms() < end;) {
		for (int i = 0; i < 300; i++) {
			int c = t_try_connect(t_port(lfd));

			if (c >= 0)
				close(c);
		}
		cr_assert_eq(spw_group_stats_full(gfd, &st, NULL, 0), 1);
		if (st.stale)
			break;
	}
	usleep(300 * 1000);
	a.stop = 1;
	pthread_join(th, NULL);
	memset(&st, 0xff, sizeof(st));
	cr_assert_eq(spw_group_stats_full(gfd, &st, NULL, 0), 1);
	off = (long long)t->arrived -
	      (long long)(t->delivered + t->dropped + st.stale + t->pending + st.dropping);
	cr_expect_eq(off, 0, "arrived %llu != delivered %llu + dropped %llu + stale %llu"
		     " + pending %u + dropping %llu (plain accepts %lu)",
		     (unsigned long long)t->arrived, (unsigned long long)t->delivered,
		     (unsigned long long)t->dropped, (unsigned long long)st.stale, t->pending,
		     (unsigned long long)st.dropping, a.accepted);
	cr_expect_eq(st.resv2[0], 0);
	cr_expect_eq(st.resv2[1], 0);
	/*
	 * The race is timing: the stock kernels hit it within seconds, the
	 * debug kernels (KASAN, lockdep under TCG) sometimes not in 30 s,
	 * and neither a busier nor a lazier plain acceptor made it likelier
	 * there. Without the race the balance above proves little, so say
	 * so: a skip on a debug kernel, a failure on a stock one.
	 */
	if (!st.stale && off == 0 && t_debug_kernel()) {
		spw_ring_exit(&ring);
		close(gfd);
		close(lfd);
		cr_skip_test("no drop raced a plain accept in 30 s on this debug kernel; "
			     "the stock kernels' runs cover the race");
	}
	cr_expect_gt(st.stale, 0, "no drop raced a plain accept: the test proved nothing");
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

/*
 * §2.8: a timeout centuries away waits like one. The kernel's deadline
 * now saturates (ktime_add_safe()). Its old ktime_add_ns() overflowed, but
 * the kernel's arithmetic wraps and the "time left" subtraction wrapped
 * back, so the raw ioctl below passed before the fix too: it guards the
 * behaviour. What did fail was the library: INT64_MAX seconds, a common
 * way to say "forever", times 10^9 overflowed into a negative timeout and
 * spw_enter() returned -EINVAL. It saturates now.
 */
Test(enter, huge_timeout_waits_for_work, .timeout = 30)
{
	struct spw_enter e = { .min_complete = 1, .flags = SPW_ENTER_F_TIMEOUT,
			       .timeout_ns = INT64_MAX };
	struct __kernel_timespec forever = { .tv_sec = INT64_MAX, .tv_nsec = 999999999 };
	struct delayed_connect d = { .delay_ms = 300, .n = 1 };
	struct spw_ring ring;
	pthread_t th;
	int lfd, gfd, ret;

	t_listeners(&lfd, 1, false, 16);
	gfd = t_group(&lfd, 1, 4);
	t_ring(&ring, gfd, 0);
	d.port = t_port(lfd);

	pthread_create(&th, NULL, connect_later, &d);
	ret = ioctl(ring.ring_fd, SPW_IOC_ENTER, &e);
	cr_expect_eq(ret, 1, "enter with timeout_ns INT64_MAX: %d (%s)", ret,
		     ret < 0 ? strerror(errno) : "ok");
	pthread_join(th, NULL);
	cr_expect_eq(t_reap(&ring, 1, 1000, NULL), 1u);
	close_all(d.fds, d.n);

	pthread_create(&th, NULL, connect_later, &d);
	ret = spw_enter(&ring, 1, &forever);
	cr_expect_eq(ret, 1, "spw_enter with INT64_MAX seconds: %d", ret);
	pthread_join(th, NULL);
	cr_expect_eq(t_reap(&ring, 1, 1000, NULL), 1u);
	close_all(d.fds, d.n);

	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

static volatile sig_atomic_t usr1_seen;

static void on_usr1(int sig)
{
	(void)sig;
	usr1_seen++;
}

struct enter_forever {
	struct spw_ring *ring;
	int ret, err;
};

static void *enter_forever(void *arg)
{
	struct enter_forever *w = arg;
	struct spw_enter e = { .min_complete = 1 };

	w->ret = ioctl(w->ring->ring_fd, SPW_IOC_ENTER, &e);
	w->err = errno;
	return NULL;
}

/*
 * A signal delivered to a consumer asleep in enter (no timeout), with a
 * handler installed with @sa_flags; a connection arrives 200 ms later.
 * Returns what the enter returned (-errno on failure), after reaping
 * whatever the ring then holds.
 */
static int signal_a_sleeping_enter(int sa_flags, unsigned *reaped)
{
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = sa_flags };
	struct enter_forever w = { 0 };
	struct spw_ring ring;
	int lfd, gfd, cfd;
	pthread_t th;

	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
	usr1_seen = 0;
	t_listeners(&lfd, 1, false, 16);
	gfd = t_group(&lfd, 1, 4);
	t_ring(&ring, gfd, 0);
	w.ring = &ring;
	pthread_create(&th, NULL, enter_forever, &w);
	usleep(300 * 1000);		/* asleep in the enter by now */
	pthread_kill(th, SIGUSR1);
	usleep(200 * 1000);
	cfd = t_connect(AF_INET, t_port(lfd));
	pthread_join(th, NULL);
	cr_expect_eq(usr1_seen, 1, "the handler ran %d times", (int)usr1_seen);
	*reaped = t_reap(&ring, 1, 2000, NULL);
	close(cfd);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
	return w.ret < 0 ? -w.err : w.ret;
}

/*
 * §2.8: a signal interrupts enter as it interrupts accept(): with
 * SA_RESTART the enter is restarted (-ERESTARTSYS inside the kernel) and
 * returns the connection that arrives later; without it, -EINTR. The
 * module returned -EINTR even under SA_RESTART. No connection is lost
 * either way.
 */
Test(enter, signal_restarts_or_interrupts_a_wait, .timeout = 30)
{
	unsigned reaped;
	int ret;

	ret = signal_a_sleeping_enter(SA_RESTART, &reaped);
	cr_expect_eq(ret, 1, "SA_RESTART: enter returned %d", ret);
	cr_expect_eq(reaped, 1u, "SA_RESTART: the connection was not in the ring");

	ret = signal_a_sleeping_enter(0, &reaped);
	cr_expect_eq(ret, -EINTR, "no SA_RESTART: enter returned %d", ret);
	cr_expect_eq(reaped, 1u, "no SA_RESTART: the connection was lost");
}

/*
 * §2.8: the stall timer stays armed while only stalled rings hold work.
 * Both rings get a connection and neither consumer comes back, so the
 * timer's first run finds both stalled and no idle consumer to wake. Then
 * consumer 1 takes its own connection (one, max_post 1) and waits in
 * epoll, having seen that first run's steal signal. Only a later run can
 * tell it that ring 0's connection is still there to take: the timer
 * stopped after a run that found nothing but stalled rings, and that
 * connection waited behind the stuck consumer until another one arrived.
 */
Test(stall, timer_stays_armed_while_only_stalled_rings_hold_work, .timeout = 30)
{
	struct epoll_event ev = { .events = EPOLLIN }, out;
	struct spw_ring ring[2];
	struct spw_cqe *cqe;
	int lfd[2], cfd[2], gfd, ep, ret;

	t_listeners(lfd, 2, false, 8);
	gfd = t_group_stall(lfd, 2, 8, 50);
	for (unsigned i = 0; i < 2; i++) {
		t_ring(&ring[i], gfd, i);
		cr_assert_geq(spw_enter(&ring[i], 0, NULL), 0);	/* responsive */
	}
	/*
	 * Both stalled before the connections arrive, so that each lands on
	 * its own ring (no ring is responsive: home): arriving while only
	 * one had stalled (a slow guest) put both on the other ring.
	 */
	usleep(300 * 1000);			/* six stall times: both stalled */
	for (unsigned i = 0; i < 2; i++)
		cfd[i] = t_connect(AF_INET, t_port(lfd[i]));
	usleep(300 * 1000);			/* the timer has run: no idle consumer */

	cr_assert_eq(spw_enter_max(&ring[1], 1, 0, NULL), 1);
	cr_assert_eq(spw_peek_cqe(&ring[1], &cqe), 0);
	cr_expect_eq(cqe->origin, 1u, "consumer 1 took ring 0's work before it waited");
	close(cqe->fd);
	spw_cqe_seen(&ring[1], cqe);

	ep = epoll_create1(EPOLL_CLOEXEC);
	cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, ring[1].ring_fd, &ev), 0);
	ret = epoll_wait(ep, &out, 1, 2000);
	cr_expect_eq(ret, 1, "the idle consumer was never told of the stalled ring's work");
	cr_expect_eq(t_reap(&ring[1], 1, 1000, NULL), 1u,
		     "ring 0's connection was not taken by the idle consumer");

	close(ep);
	close_all(cfd, 2);
	for (unsigned i = 0; i < 2; i++) {
		spw_ring_exit(&ring[i]);
		close(lfd[i]);
	}
	close(gfd);
}
