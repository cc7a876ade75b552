/* SPDX-License-Identifier: MIT */
/*
 * spw-fuzz: a seeded, time-bounded, multi-process fuzzer for the spillway
 * module, in the spirit of syzkaller. Run as root in a throw-away guest.
 *
 *   spw-fuzz [--seed N] [--seconds S] [--procs P] [--verbose]
 *
 * Every process runs random sequences of operations on the module's
 * objects (groups, rings, mappings) and on the sockets around them
 * (listeners, clients, accepted children), from its own PRNG derived from
 * the seed and its index. Return codes are not checked: the kernel log is
 * (tests/vm/run fails the run on BUG:/WARNING:/Oops/KASAN). What the
 * fuzzer itself guarantees is that it never hangs: every wait is bounded,
 * every socket is non-blocking, and each process has an alarm() watchdog
 * that reports the operation it was stuck in. A process that cannot be
 * reaped after SIGKILL (stuck in the kernel) is reported as a HANG.
 *
 * Exit status: 0, or 2 on a hang / watchdog report, 64 on usage errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spillway.h"
#include "loopback.h"

#define MAX_PROCS	32
#define NOBJ		48	/* objects per process */
#define NMAP		8	/* ring mappings per process */
#define NKIDS		8	/* forked children per process */
#define FD_LIMIT	256	/* RLIMIT_NOFILE of a fuzz process */
#define WATCHDOG_S	15	/* one operation may take at most this long */
#define ENTER_MAX_NS	(50 * 1000000LL)

#define OPS(X) \
	X(listen_new) X(sock_other) X(group_create) X(ring_open) X(mmap) \
	X(munmap) X(enter) X(stats) X(close) X(dup) X(fork) X(scm_send) \
	X(scm_recv) X(shut_rd) X(relisten) X(connect) X(accept) \
	X(kill_sibling) X(stop_sibling) X(ring_write) X(consume) X(poll) \
	X(reap) X(group_listen) X(member_listener)

enum op {
#define X(n) OP_##n,
	OPS(X)
#undef X
	NOPS
};

static const char *const op_names[NOPS] = {
#define X(n) #n,
	OPS(X)
#undef X
};

/* Relative weights: the module's own operations dominate. */
static const unsigned op_weight[NOPS] = {
	[OP_listen_new] = 8, [OP_sock_other] = 2, [OP_group_create] = 8,
	[OP_ring_open] = 8, [OP_mmap] = 6, [OP_munmap] = 2, [OP_enter] = 14,
	[OP_stats] = 4, [OP_close] = 6, [OP_dup] = 2, [OP_fork] = 1,
	[OP_scm_send] = 2, [OP_scm_recv] = 2, [OP_shut_rd] = 1,
	[OP_relisten] = 1, [OP_connect] = 14, [OP_accept] = 2,
	[OP_kill_sibling] = 1, [OP_stop_sibling] = 1, [OP_ring_write] = 6,
	[OP_consume] = 6, [OP_poll] = 2, [OP_reap] = 2,
	[OP_group_listen] = 3, [OP_member_listener] = 2,
};

/* Shared between the master and every fuzz process (MAP_SHARED). */
struct shared {
	pid_t pid[MAX_PROCS];			/* current fuzz process of each slot */
	volatile int cur_op[MAX_PROCS];		/* what it is doing: for hang reports */
	uint64_t count[MAX_PROCS][NOPS];
	uint64_t ok[MAX_PROCS][NOPS];		/* of those, the ones that did something */
	/*
	 * The stats identity (see spw-soak.c, docs/operations.md), asserted:
	 * arrived - (delivered + dropped + stale + pending + dropping) per
	 * snapshot must be 0.
	 */
	uint64_t id_checked, id_off;
	int64_t id_min, id_max;
	volatile int watchdog_fired;
};

static struct shared *sh;
static unsigned nprocs = 4;
static uint64_t seed;
static double deadline;		/* CLOCK_MONOTONIC seconds */
static bool verbose;

/* ------------------------------------------------------------- PRNG --- */

static uint64_t rng_state;

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rnd64(void) { return splitmix(&rng_state); }
static uint32_t rnd(uint32_t n) { return n ? (uint32_t)(rnd64() % n) : 0; }
static bool chance(unsigned pct) { return rnd(100) < pct; }

/* An "interesting" 32-bit value, as fuzzers like them. */
static uint32_t rnd_u32(void)
{
	static const uint32_t vals[] = {
		0, 1, 2, 3, 4, 7, 8, 16, 63, 64, 65, 127, 128, 255, 256, 1023,
		1024, 1025, 4096, 32767, 32768, 32769, 65535, 65536,
		0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
	};

	switch (rnd(4)) {
	case 0: return (uint32_t)rnd64();
	case 1: return 1u << rnd(32);
	default: return vals[rnd(sizeof(vals) / sizeof(vals[0]))];
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ----------------------------------------------------- object tables --- */

enum kind { K_FREE, K_LISTENER, K_TCP, K_UDP, K_CTL, K_GROUP, K_RING,
	    K_CLIENT, K_CHILD, NKINDS };

struct obj {
	int fd;
	enum kind kind;
	int family;
	uint16_t port;		/* listeners and clients: the member port */
	uint64_t ring_bytes;	/* rings: mmap length from RING_OPEN */
};

struct map {
	unsigned char *p;	/* NULL: free */
	size_t len;
	size_t bytes;		/* the ring's size: where the CQEs end */
	bool writable;
};

static struct obj objs[NOBJ];
static struct map maps[NMAP];
static pid_t kids[NKIDS];
static int scm[2] = { -1, -1 };
static int slot;		/* index of this fuzz process */
static bool in_child;		/* a fork op's child: no fork, no sibling kills */
static int last_closed = -1;	/* a recently closed fd number */
static bool op_ok;		/* the current op succeeded (for the summary) */

static int obj_count(void)
{
	int n = 0;

	for (int i = 0; i < NOBJ; i++)
		n += objs[i].kind != K_FREE;
	return n;
}

static void obj_close(struct obj *o)
{
	if (o->kind == K_FREE)
		return;
	close(o->fd);
	last_closed = o->fd;
	o->kind = K_FREE;
	o->fd = -1;
}

/* A table slot for a new object: the oldest-looking one goes if full. */
static struct obj *obj_add(int fd, enum kind kind)
{
	struct obj *o = NULL;

	if (fd < 0)
		return NULL;
	for (int i = 0; i < NOBJ && !o; i++)
		if (objs[i].kind == K_FREE)
			o = &objs[i];
	if (!o) {
		o = &objs[rnd(NOBJ)];
		obj_close(o);
	}
	memset(o, 0, sizeof(*o));
	o->fd = fd;
	o->kind = kind;
	return o;
}

/* A random object of @kind (usually), of any kind, or NULL. */
static struct obj *obj_pick(enum kind kind)
{
	int start = rnd(NOBJ);

	if (!chance(85))
		kind = K_FREE;		/* any */
	for (int i = 0; i < NOBJ; i++) {
		struct obj *o = &objs[(start + i) % NOBJ];

		if (o->kind != K_FREE && (kind == K_FREE || o->kind == kind))
			return o;
	}
	return NULL;
}

/* An fd for @kind: mostly a real one, sometimes garbage. */
static int fd_pick(enum kind kind)
{
	struct obj *o;

	switch (rnd(20)) {
	case 0: return -1;
	case 1: return last_closed;
	case 2: return 1000 + rnd(4000);
	case 3: return scm[rnd(2)];
	}
	o = obj_pick(kind);
	return o ? o->fd : (int)rnd(16);
}

/*
 * Close every fd this process does not track: the ones enter, accept()
 * and SCM_RIGHTS install (their numbers may sit in scribbled CQEs, so
 * they are never trusted).
 */
static void fd_sweep(void)
{
	bool keep[FD_LIMIT] = { false };
	int lo = 3;

	for (int i = 0; i < NOBJ; i++)
		if (objs[i].kind != K_FREE && objs[i].fd < FD_LIMIT)
			keep[objs[i].fd] = true;
	for (int i = 0; i < 2; i++)
		if (scm[i] >= 0)
			keep[scm[i]] = true;
	for (int fd = 3; fd <= FD_LIMIT; fd++) {
		if (fd < FD_LIMIT && !keep[fd])
			continue;
		if (fd > lo)
			syscall(SYS_close_range, lo, fd - 1, 0);
		lo = fd + 1;
	}
}

/* ------------------------------------------------------- addresses --- */

static uint16_t sock_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (void *)&ss, &len))
		return 0;
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int sock_family(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (void *)&ss, &len))
		return AF_INET;
	return ss.ss_family;
}

static int rnd_backlog(void)
{
	static const int b[] = { 0, 1, 2, 4, 16, 128, 4096, -1 };

	return b[rnd(8)];
}

/* ------------------------------------------------------------- ops --- */

static void op_listen_new(void)
{
	int family = chance(70) ? AF_INET : AF_INET6;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_storage ss;
	uint16_t port = 0;
	int one = 1;
	struct obj *o;

	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (chance(50)) {
		/* share a port with an existing listener of the same family */
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
		o = obj_pick(K_LISTENER);
		if (o && o->kind == K_LISTENER && o->family == family && chance(60))
			port = o->port;
	}
	if (bind(fd, (void *)&ss, t_loopback(family, port, &ss)) ||
	    listen(fd, rnd_backlog())) {
		close(fd);
		return;
	}
	o = obj_add(fd, K_LISTENER);
	o->family = family;
	o->port = sock_port(fd);
}

static void op_sock_other(void)
{
	int family = chance(70) ? AF_INET : AF_INET6;
	bool udp = chance(50);
	int fd = socket(family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
	struct sockaddr_storage ss;
	struct obj *o;

	if (fd < 0)
		return;
	if (chance(50))
		bind(fd, (void *)&ss, t_loopback(family, 0, &ss));
	o = obj_add(fd, udp ? K_UDP : K_TCP);
	o->family = family;
	o->port = sock_port(fd);
}

static int ctl_fd(void)
{
	struct obj *o = obj_pick(K_CTL);

	if (o && o->kind == K_CTL && chance(90))
		return o->fd;
	if (chance(5))
		return fd_pick(K_GROUP);	/* wrong kind of fd */
	o = obj_add(open(SPW_DEVICE_PATH, O_RDWR | (chance(50) ? O_CLOEXEC : 0)), K_CTL);
	return o ? o->fd : -1;
}

static struct obj *ring_open_on(int gfd, uint32_t member);
static void mmap_obj(struct obj *o);

static void op_group_create(void)
{
	static const uint32_t entries[] = { 0, 1, 2, 4, 8, 16, 64, 256, 3, 100,
					    32768, 65536 };
	struct spw_group_create a = { 0 };
	int32_t fds[10];
	unsigned n = 1 + rnd(8);
	int ctl = ctl_fd(), ret;
	bool good = chance(60);

	if (good) {
		/* well-formed: distinct listeners, valid parameters */
		int start = rnd(NOBJ);

		n = 0;
		for (int i = 0; i < NOBJ && n < 1 + rnd(4); i++) {
			struct obj *o = &objs[(start + i) % NOBJ];

			if (o->kind == K_LISTENER)
				fds[n++] = o->fd;
		}
		if (!n)
			return;
	}
	for (unsigned i = 0; i < n && !good; i++) {
		switch (rnd(12)) {
		case 0: fds[i] = fd_pick(K_TCP); break;
		case 1: fds[i] = fd_pick(K_UDP); break;
		case 2: fds[i] = i ? fds[rnd(i)] : fd_pick(K_LISTENER); break;
		case 3: fds[i] = fd_pick(K_FREE); break;
		default: fds[i] = fd_pick(K_LISTENER); break;
		}
	}
	a.fds = (uintptr_t)fds;
	a.nr_fds = n;
	a.ring_entries = chance(85) ? entries[rnd(10)] :
			 chance(50) ? entries[10 + rnd(2)] : rnd_u32();
	a.flags = chance(90) ? (chance(50) ? SPW_GROUP_F_CLOEXEC : 0) |
			       (chance(30) ? SPW_GROUP_F_SHARE_LISTENERS : 0) : rnd_u32();
	switch (rnd(6)) {
	case 0: a.stall_ms = SPW_STALL_OFF; break;
	case 1: a.stall_ms = rnd_u32(); break;
	case 2: a.stall_ms = 1 + rnd(50); break;
	default: a.stall_ms = 0; break;
	}
	a.policy = rnd(SPW_POLICY_MAX + 1);
	a.spill_at = chance(30) ? rnd(8) : 0;
	if (good) {
		a.ring_entries = 1u << rnd(7);
		a.flags &= SPW_GROUP_F_ALL;
		if (a.spill_at > a.ring_entries)
			a.spill_at = a.ring_entries;
	} else {
		if (chance(5))
			a.resv[rnd(2)] = rnd_u32();
		if (chance(5))
			a.policy = rnd_u32();
		if (chance(4))
			a.nr_fds = rnd_u32();
		if (chance(3))
			a.fds = chance(50) ? 0 : (chance(50) ? 8 : 0xffffffffffff0000ULL);
	}
	ret = ioctl(ctl, SPW_IOC_GROUP_CREATE, &a);
	if (ret >= 0) {
		obj_add(ret, K_GROUP);
		op_ok = true;
		/* mostly put it to work at once: a ring, mapped */
		if (chance(60)) {
			struct obj *r = ring_open_on(ret, rnd(n));

			if (r && chance(80))
				mmap_obj(r);
		}
	}
}

static struct obj *ring_open_on(int gfd, uint32_t member)
{
	struct spw_ring_open a = { 0 };
	int ret;

	a.member = member;
	a.flags = chance(90) ? (chance(50) ? SPW_RING_OPEN_F_CLOEXEC : 0) : rnd_u32();
	if (chance(4))
		a.resv[rnd(3)] = rnd_u32();
	ret = ioctl(gfd, SPW_IOC_RING_OPEN, chance(2) ? (void *)16 : &a);
	if (ret >= 0) {
		struct obj *o = obj_add(ret, K_RING);

		o->ring_bytes = a.ring_bytes;
		op_ok = true;
		return o;
	}
	return NULL;
}

static void op_ring_open(void)
{
	ring_open_on(fd_pick(K_GROUP), chance(60) ? rnd(2) : chance(85) ? rnd(9) : rnd_u32());
}

static void mmap_obj(struct obj *o)
{
	struct map *m = NULL;
	size_t len, page = 4096;
	off_t off = 0;
	bool wr = chance(95);
	void *p;

	if (!o)
		return;
	for (int i = 0; i < NMAP && !m; i++)
		if (!maps[i].p)
			m = &maps[i];
	if (!m) {
		m = &maps[rnd(NMAP)];
		munmap(m->p, m->len);
		m->p = NULL;
	}
	len = o->kind == K_RING ? o->ring_bytes : page;
	switch (rnd(8)) {
	case 0: len = page; break;
	case 1: len = (len + page - 1) / page * page + page; break;	/* too long */
	case 2: len = 1 + rnd(3 * page); break;
	case 3: off = page * (1 + rnd(4)); break;
	case 4: len = (size_t)1 << (12 + rnd(12)); break;
	}
	if (!len)
		len = page;
	p = mmap(NULL, len, PROT_READ | (wr ? PROT_WRITE : 0),
		 chance(95) ? MAP_SHARED : MAP_PRIVATE, o->fd, off);
	if (p == MAP_FAILED)
		return;
	m->p = p;
	op_ok = true;
	m->writable = wr;
	m->len = (len + page - 1) / page * page;
	m->bytes = o->kind == K_RING && o->ring_bytes ? o->ring_bytes : m->len;
	if (m->bytes > m->len)
		m->bytes = m->len;
}

static void op_mmap(void)
{
	mmap_obj(obj_pick(K_RING));
}

static struct map *map_pick(void)
{
	int start = rnd(NMAP);

	for (int i = 0; i < NMAP; i++)
		if (maps[(start + i) % NMAP].p)
			return &maps[(start + i) % NMAP];
	return NULL;
}

static void op_munmap(void)
{
	struct map *m = map_pick();
	size_t keep;

	if (!m)
		return;
	keep = m->len / 4096 > 1 && chance(30) ? 4096 * (1 + rnd(m->len / 4096 - 1)) : 0;
	if (!keep) {
		munmap(m->p, m->len);
		m->p = NULL;
		return;
	}
	/* cut the tail off: the head page stays writable */
	munmap(m->p + keep, m->len - keep);
	m->len = keep;
	if (m->bytes > keep)
		m->bytes = keep;
}

static int64_t rnd_timeout(void)
{
	switch (rnd(10)) {
	case 0: return 0;
	case 1: return -1 - (int64_t)rnd(1000);
	case 2: return ENTER_MAX_NS;
	case 3: return (int64_t)rnd(1000);
	default: return (int64_t)rnd(5 * 1000000);
	}
}

static void op_enter(void)
{
	struct spw_enter a = { 0 };
	int fd = fd_pick(K_RING);

	switch (rnd(6)) {
	case 0: a.min_complete = 0; break;
	case 1: a.min_complete = rnd_u32(); break;
	case 2: a.min_complete = 2 + rnd(64); break;
	default: a.min_complete = 1; break;
	}
	a.flags = chance(95) ? SPW_ENTER_F_TIMEOUT : rnd_u32();
	a.accept_flags = chance(90) ? (rnd(4) & 1 ? SPW_ACCEPT_NONBLOCK : 0) |
				      (rnd(4) & 2 ? SPW_ACCEPT_CLOEXEC : 0) : rnd_u32();
	switch (rnd(4)) {
	case 0: a.max_post = 1; break;
	case 1: a.max_post = chance(10) ? rnd_u32() : 1 + rnd(8); break;
	default: a.max_post = 0; break;
	}
	a.timeout_ns = rnd_timeout();
	/* mostly a stale or foreign owner id, as a process that forked has */
	a.owner = chance(80) ? 0 : rnd(8);
	if (chance(5))
		a.resv = rnd_u32();
	/*
	 * Never wait unbounded: a wait needs the timeout flag. (Huge
	 * timeouts only where nothing waits: min_complete 0.)
	 */
	if (a.min_complete && !(a.flags & SPW_ENTER_F_TIMEOUT))
		a.flags |= SPW_ENTER_F_TIMEOUT;
	if (!a.min_complete && chance(20))
		a.timeout_ns = INT64_MAX - rnd(1000);
	op_ok = ioctl(fd, SPW_IOC_ENTER, chance(2) ? (void *)0x1000 : &a) > 0;
	fd_sweep();
}

static void op_stats(void)
{
	struct spw_member_stats ms[10];
	struct spw_group_stats st = { 0 };
	int fd = fd_pick(chance(60) ? K_GROUP : K_RING);

	st.nr = chance(80) ? rnd(11) : rnd_u32();
	switch (rnd(10)) {
	case 0: st.members = 0; break;
	case 1: st.members = 0xffffffffffff0000ULL; break;
	case 2: st.members = 8; break;
	case 3: st.members = (uintptr_t)ms + 1; st.nr = st.nr > 9 ? 9 : st.nr; break;
	default: st.members = (uintptr_t)ms; if (st.nr > 10) st.nr = 10; break;
	}
	if (chance(3))
		st.resv = rnd_u32();
	op_ok = ioctl(fd, SPW_IOC_GROUP_STATS, chance(2) ? (void *)0x10 : &st) >= 0;
	if (op_ok) {
		const struct spw_member_stats *t = &st.total;
		int64_t d = (int64_t)t->arrived -
			    (int64_t)(t->delivered + t->dropped + st.stale + t->pending +
				       st.dropping);

		__atomic_fetch_add(&sh->id_checked, 1, __ATOMIC_RELAXED);
		if (d) {
			__atomic_fetch_add(&sh->id_off, 1, __ATOMIC_RELAXED);
			if (d < __atomic_load_n(&sh->id_min, __ATOMIC_RELAXED))
				__atomic_store_n(&sh->id_min, d, __ATOMIC_RELAXED);
			if (d > __atomic_load_n(&sh->id_max, __ATOMIC_RELAXED))
				__atomic_store_n(&sh->id_max, d, __ATOMIC_RELAXED);
		}
	}
}

static void op_close(void)
{
	struct obj *o = obj_pick(K_FREE);

	if (o)
		obj_close(o);
}

static void op_dup(void)
{
	struct obj *o = obj_pick(K_FREE);
	struct obj *n;

	if (!o || obj_count() > NOBJ - 4)
		return;
	n = obj_add(chance(50) ? dup(o->fd) : fcntl(o->fd, F_DUPFD_CLOEXEC, 3), o->kind);
	if (n) {
		struct obj copy = *o;

		copy.fd = n->fd;
		*n = copy;
	}
}

static void op_reap(void)
{
	for (int i = 0; i < NKIDS; i++)
		if (kids[i] > 0 && waitpid(kids[i], NULL, WNOHANG) == kids[i])
			kids[i] = 0;
}

static void run_ops(unsigned n);

static void op_fork(void)
{
	int i;
	pid_t pid;

	if (in_child)
		return;
	op_reap();
	for (i = 0; i < NKIDS && kids[i] > 0; i++)
		;
	if (i == NKIDS)
		return;
	(void)rnd64();
	pid = fork();
	if (pid < 0)
		return;
	if (!pid) {
		/* a few ops of its own, then exit (or be killed) */
		in_child = true;
		rng_state ^= 0x5bd1e995ULL * (uint64_t)getpid();
		memset(kids, 0, sizeof(kids));
		run_ops(1 + rnd(20));
		if (chance(30))
			sleep_us(rnd(50000));
		_exit(0);
	}
	kids[i] = pid;
	op_ok = true;
	if (chance(40)) {
		sleep_us(rnd(20000));
		kill(pid, SIGKILL);
	}
}

static void op_scm_send(void)
{
	char cbuf[CMSG_SPACE(3 * sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = "x", .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = cbuf };
	unsigned n = 1 + rnd(3);
	struct cmsghdr *c;
	int fds[3];

	for (unsigned i = 0; i < n; i++) {
		fds[i] = fd_pick(chance(50) ? K_RING : K_GROUP);
		if (fds[i] < 0)
			fds[i] = scm[0];
	}
	msg.msg_controllen = CMSG_SPACE(n * sizeof(int));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(c), fds, n * sizeof(int));
	sendmsg(scm[rnd(2)], &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Receive passed fds; they join the table as whatever they look like. */
static void op_scm_recv(void)
{
	char cbuf[CMSG_SPACE(3 * sizeof(int))];
	char b;
	struct iovec iov = { .iov_base = &b, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c;

	if (recvmsg(scm[rnd(2)], &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
		return;
	op_ok = true;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		int n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int fds[3];

		if (n > 3)
			n = 3;
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		memcpy(fds, CMSG_DATA(c), n * sizeof(int));
		for (int i = 0; i < n; i++) {
			struct spw_group_stats st = { 0 };
			struct spw_enter e = { .flags = SPW_ENTER_F_TIMEOUT };

			/* a ring answers enter; a group only stats */
			if (ioctl(fds[i], SPW_IOC_ENTER, &e) >= 0 || errno == ETIME)
				obj_add(fds[i], K_RING);
			else if (ioctl(fds[i], SPW_IOC_GROUP_STATS, &st) >= 0)
				obj_add(fds[i], K_GROUP);
			else
				obj_add(fds[i], K_TCP);
		}
	}
	fd_sweep();
}

static void op_shut_rd(void)
{
	op_ok = !shutdown(fd_pick(K_LISTENER), chance(80) ? SHUT_RD : (int)rnd(3));
}

static void op_relisten(void)
{
	op_ok = !listen(fd_pick(K_LISTENER), rnd_backlog());
}

static void op_connect(void)
{
	struct obj *l = obj_pick(K_LISTENER);
	struct sockaddr_storage ss;
	struct pollfd p;
	int family, fd;

	if (!l || !l->port)
		return;
	family = l->family ? l->family : AF_INET;
	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return;
	if (connect(fd, (void *)&ss, t_loopback(family, l->port, &ss)) && errno != EINPROGRESS) {
		close(fd);
		return;
	}
	p = (struct pollfd){ .fd = fd, .events = POLLOUT };
	op_ok = poll(&p, 1, 5) == 1 && !(p.revents & (POLLERR | POLLHUP));
	if (chance(60))
		send(fd, "q", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (chance(60) || obj_count() > NOBJ - 8) {
		if (chance(20)) {
			struct linger lg = { 1, 0 };	/* RST */

			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		close(fd);
		return;
	}
	l = obj_add(fd, K_CLIENT);	/* hold it */
	l->family = family;
}

static void op_accept(void)
{
	struct obj *o = obj_add(accept4(fd_pick(K_LISTENER), NULL, NULL,
					SOCK_NONBLOCK | SOCK_CLOEXEC), K_CHILD);

	op_ok = o != NULL;
	if (o && chance(50))
		send(o->fd, "a", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	fd_sweep();
}

static pid_t sibling(void)
{
	unsigned s = rnd(nprocs);

	if (s == (unsigned)slot || in_child)
		return 0;
	return sh->pid[s];
}

static void op_kill_sibling(void)
{
	pid_t pid = sibling();

	if (pid > 0 && chance(30))	/* rarer than the weight says: it costs a respawn */
		op_ok = !kill(pid, SIGKILL);
}

static void op_stop_sibling(void)
{
	pid_t pid = sibling();

	if (pid <= 0)
		return;
	kill(pid, SIGSTOP);
	sleep_us(rnd(50000));
	kill(pid, SIGCONT);
}

/* Scribble on the shared ring: head, tail, flags, anything, CQEs. */
static void op_ring_write(void)
{
	struct map *m = map_pick();
	struct spw_ring_hdr *h;
	uint32_t v = rnd_u32();
	size_t off;

	if (!m || !m->writable)
		return;
	h = (void *)m->p;
	switch (rnd(8)) {
	case 0: case 1:
		/* a plausible head: near the tail */
		v = h->tail + rnd(5) - 2 + (chance(20) ? h->ring_entries : 0);
		/* fall through */
	case 2: off = offsetof(struct spw_ring_hdr, head); break;
	case 3: off = offsetof(struct spw_ring_hdr, tail); break;
	case 4: off = offsetof(struct spw_ring_hdr, flags); break;
	case 5: off = rnd(192) & ~3u; break;
	default:
		off = m->bytes > 192 ? 192 + (rnd(m->bytes - 192) & ~3u) : rnd(m->len) & ~3u;
		break;
	}
	if (off + 4 > m->len)
		return;
	__atomic_store_n((uint32_t *)(m->p + off), v, __ATOMIC_RELEASE);
}

/* What a good consumer does: head = tail (the fds go in the sweep). */
static void op_consume(void)
{
	struct map *m = map_pick();
	struct spw_ring_hdr *h;

	if (!m || !m->writable || m->len < sizeof(*h))
		return;
	h = (void *)m->p;
	__atomic_store_n(&h->head, __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE),
			 __ATOMIC_RELEASE);
}

/*
 * spw_group_listen(): the library makes the listeners and registers them
 * as a group that owns them (SPW_GROUP_F_SHARE_LISTENERS): random sizes,
 * policies, ports in use, bad arguments.
 */
static void op_group_listen(void)
{
	struct spw_group_params p = { 0 };
	struct sockaddr_storage ss;
	int family = chance(70) ? AF_INET : AF_INET6;
	struct obj *o = obj_pick(K_LISTENER);
	unsigned nr = 1 + rnd(4);
	uint16_t port = 0;
	socklen_t len;
	int ret;

	if (o && o->kind == K_LISTENER && o->family == family && chance(30))
		port = o->port;		/* mostly EADDRINUSE, sometimes a reuseport join */
	len = t_loopback(family, port, &ss);
	p.ring_entries = 1u << rnd(7);
	p.policy = rnd(SPW_POLICY_MAX + 1);
	p.spill_at = chance(30) ? rnd(p.ring_entries + 1) : 0;
	p.stall_ms = chance(50) ? 0 : 1 + rnd(50);
	p.flags = chance(50) ? SPW_GROUP_F_CLOEXEC : 0;
	if (chance(15)) {
		switch (rnd(5)) {
		case 0: len = rnd(200); break;
		case 1: nr = rnd_u32(); break;
		case 2: p.policy = rnd_u32(); break;
		case 3: p.flags = rnd_u32(); break;
		default: ((struct sockaddr *)&ss)->sa_family = rnd(64); break;
		}
	}
	ret = spw_group_listen((struct sockaddr *)&ss, len, nr, rnd_backlog(), &p);
	if (ret >= 0) {
		obj_add(ret, K_GROUP);
		op_ok = true;
		if (chance(60)) {
			struct obj *r = ring_open_on(ret, rnd(nr));

			if (r && chance(80))
				mmap_obj(r);
		}
	}
}

/* A member's listener out of a group: then it is a listener like any other. */
static void op_member_listener(void)
{
	struct spw_member_listener a = { .member = rnd(6) };
	int fd, gfd = fd_pick(K_GROUP);
	struct obj *o;

	a.flags = chance(90) ? (chance(50) ? SPW_RING_OPEN_F_CLOEXEC : 0) : rnd_u32();
	fd = ioctl(gfd, SPW_IOC_MEMBER_LISTENER, chance(2) ? (void *)16 : &a);
	if (fd < 0)
		return;
	op_ok = true;
	/* a dup of the group's listener file: the module made it blocking */
	fcntl(fd, F_SETFL, O_NONBLOCK);
	o = obj_add(fd, K_LISTENER);
	if (!o)
		return;
	o->family = sock_family(fd);
	o->port = sock_port(fd);
}

static void op_poll(void)
{
	struct pollfd p = { .fd = fd_pick(K_RING), .events = POLLIN };

	poll(&p, 1, rnd(3));
}

static void (*const op_fn[NOPS])(void) = {
#define X(n) op_##n,
	OPS(X)
#undef X
};

static unsigned weight_total;

static enum op pick_op(void)
{
	unsigned r = rnd(weight_total);

	for (int i = 0; i < NOPS; i++) {
		if (r < op_weight[i])
			return i;
		r -= op_weight[i];
	}
	return OP_enter;
}

static void run_ops(unsigned n)
{
	for (unsigned i = 0; i < n && now_s() < deadline; i++) {
		enum op op = pick_op();

		if (in_child && (op == OP_fork || op == OP_kill_sibling ||
				 op == OP_stop_sibling))
			continue;
		if (!in_child)
			sh->cur_op[slot] = op;
		alarm(WATCHDOG_S);
		op_ok = false;
		op_fn[op]();
		__atomic_fetch_add(&sh->count[slot][op], 1, __ATOMIC_RELAXED);
		if (op_ok)
			__atomic_fetch_add(&sh->ok[slot][op], 1, __ATOMIC_RELAXED);
	}
	alarm(0);
}

static void on_watchdog(int sig)
{
	char buf[160];
	int n;

	(void)sig;
	n = snprintf(buf, sizeof(buf),
		     "spw-fuzz: WATCHDOG: proc %d (pid %d%s) stuck %d s in op %s, seed=%" PRIu64 "\n",
		     slot, getpid(), in_child ? ", fork child" : "", WATCHDOG_S,
		     op_names[sh->cur_op[slot]], seed);
	if (write(2, buf, n) < 0)
		n = 0;
	sh->watchdog_fired = 1;
	_exit(99);
}

/* One fuzz process: ops until the deadline, then close everything. */
static void fuzz_proc(int s, unsigned gen)
{
	struct rlimit rl = { FD_LIMIT, FD_LIMIT };
	struct sigaction sa = { .sa_handler = on_watchdog };

	slot = s;
	rng_state = seed;
	rng_state = splitmix(&rng_state) ^ (0x1000003ULL * (s + 1)) ^ ((uint64_t)gen << 40);
	setrlimit(RLIMIT_NOFILE, &rl);
	sigaction(SIGALRM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; i < NOBJ; i++)
		objs[i].fd = -1;
	socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, scm);
	fd_sweep();

	while (now_s() < deadline)
		run_ops(64);

	/* teardown: children first, then every object and mapping */
	alarm(WATCHDOG_S);
	sh->cur_op[slot] = OP_reap;
	for (int i = 0; i < NKIDS; i++)
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
	for (int i = 0; i < NMAP; i++)
		if (maps[i].p)
			munmap(maps[i].p, maps[i].len);
	for (int i = 0; i < NOBJ; i++)
		obj_close(&objs[i]);
	close(scm[0]);
	close(scm[1]);
	_exit(0);
}

static pid_t spawn(int s, unsigned gen)
{
	pid_t pid = fork();

	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (!pid)
		fuzz_proc(s, gen);
	sh->pid[s] = pid;
	return pid;
}

static void usage(void)
{
	fprintf(stderr, "usage: spw-fuzz [--seed N] [--seconds S] [--procs P] [--verbose]\n");
	exit(64);
}

int main(int argc, char **argv)
{
	double seconds = 10, t_end, t_kill;
	unsigned gen[MAX_PROCS] = { 0 }, respawns = 0, hangs = 0;
	bool have_seed = false, done[MAX_PROCS] = { false };
	uint64_t total[NOPS] = { 0 }, ok[NOPS] = { 0 }, sum = 0;
	int live;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			seed = strtoull(argv[++i], NULL, 0);
			have_seed = true;
		} else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
			seconds = atof(argv[++i]);
		} else if (!strcmp(argv[i], "--procs") && i + 1 < argc) {
			nprocs = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--verbose")) {
			verbose = true;
		} else {
			usage();
		}
	}
	if (!have_seed) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint64_t)ts.tv_sec * 1000003ULL ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32;
	}
	if (nprocs < 1 || nprocs > MAX_PROCS || seconds <= 0)
		usage();
	/* first, so a run can always be reproduced */
	printf("spw-fuzz: seed=%" PRIu64 " seconds=%g procs=%u\n", seed, seconds, nprocs);
	fflush(stdout);

	for (int i = 0; i < NOPS; i++)
		weight_total += op_weight[i];
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	/* fork-op children of a killed fuzz process come back to us */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	deadline = now_s() + seconds;
	for (unsigned s = 0; s < nprocs; s++)
		spawn(s, 0);

	/*
	 * Supervise: respawn what a sibling killed, resume what a sibling
	 * stopped and died before resuming; after the deadline, give the
	 * processes time to tear down, then kill, then report the stuck.
	 */
	t_end = deadline + 2 * WATCHDOG_S;
	t_kill = t_end + 10;
	for (;;) {
		live = 0;
		for (unsigned s = 0; s < nprocs; s++) {
			int st;
			pid_t r;

			if (done[s])
				continue;
			r = waitpid(sh->pid[s], &st, WNOHANG);
			if (r != sh->pid[s]) {
				live++;
				continue;
			}
			if (WIFEXITED(st) && WEXITSTATUS(st) == 99) {
				hangs++;	/* the watchdog already said where */
			} else if (WIFSIGNALED(st) && now_s() < deadline - 0.5) {
				respawns++;
				spawn(s, ++gen[s]);
				if (verbose)
					printf("spw-fuzz: proc %u killed by signal %d, respawned (gen %u)\n",
					       s, WTERMSIG(st), gen[s]);
				live++;
				continue;
			} else if (!WIFEXITED(st) && !WIFSIGNALED(st)) {
				live++;
				continue;
			}
			done[s] = true;
		}
		if (!live)
			break;
		for (unsigned s = 0; s < nprocs; s++)
			if (!done[s])
				kill(sh->pid[s], SIGCONT);
		if (now_s() > t_end)
			for (unsigned s = 0; s < nprocs; s++)
				if (!done[s])
					kill(sh->pid[s], SIGKILL);
		if (now_s() > t_kill) {
			for (unsigned s = 0; s < nprocs; s++)
				if (!done[s])
					printf("spw-fuzz: HANG: proc %u (pid %d) cannot be reaped after SIGKILL; last op %s\n",
					       s, sh->pid[s], op_names[sh->cur_op[s]]);
			hangs++;
			break;
		}
		sleep_us(100000);
	}
	/* orphaned fork-op children (their parent was SIGKILLed) came to us */
	for (double t = now_s() + 10;;) {
		pid_t r = waitpid(-1, NULL, WNOHANG);

		if (r < 0 && errno == ECHILD)
			break;
		if (r > 0)
			continue;
		if (now_s() > t) {
			printf("spw-fuzz: HANG: an orphaned fork child cannot be reaped\n");
			hangs++;
			break;
		}
		sleep_us(50000);
	}

	/*
	 * op_scm_send can leave a ring or group in flight inside an
	 * SCM_RIGHTS cycle nobody can reach (scm[0] sent over its own pair,
	 * with them). Only the kernel's unix GC frees such a cycle, and it
	 * runs when a unix socket is released while fds are in flight: on a
	 * live system all the time, in a test guest perhaps never once the
	 * fuzz processes are gone. Release one, so that run-fuzz's leak check
	 * finds what the GC cannot free, not what it has not yet been asked
	 * to (tests/kernel/test_lifecycle.c, group_in_an_scm_cycle_...).
	 */
	{
		int sp[2];

		if (!socketpair(AF_UNIX, SOCK_DGRAM, 0, sp)) {
			close(sp[0]);
			close(sp[1]);
		}
	}

	for (unsigned s = 0; s < nprocs; s++)
		for (int i = 0; i < NOPS; i++) {
			total[i] += sh->count[s][i];
			ok[i] += sh->ok[s][i];
		}
	/* op=count, and (ok N) where success is meaningful */
	printf("spw-fuzz: op counts:");
	for (int i = 0; i < NOPS; i++) {
		printf("%s %s=%" PRIu64, i % 6 ? "" : "\n ", op_names[i], total[i]);
		if (ok[i])
			printf("(ok %" PRIu64 ")", ok[i]);
		sum += total[i];
	}
	printf("\nspw-fuzz: total ops=%" PRIu64 " respawns=%u hangs=%u\n", sum, respawns, hangs);
	printf("spw-fuzz: stats identity arrived-(delivered+dropped+stale+pending+dropping): %" PRIu64
	       " snapshots, %" PRIu64 " off (min %" PRId64 ", max %" PRId64 ")\n",
	       sh->id_checked, sh->id_off, sh->id_min, sh->id_max);
	printf("seed=%" PRIu64 "\n", seed);
	if (sh->id_off) {
		printf("spw-fuzz: FAIL: the counters did not balance %" PRIu64 " times; reproduce with --seed %" PRIu64 "\n",
		       sh->id_off, seed);
		return 3;
	}
	if (hangs || sh->watchdog_fired) {
		printf("spw-fuzz: FAIL: a process hung (see above); reproduce with --seed %" PRIu64 "\n", seed);
		return 2;
	}
	return 0;
}
