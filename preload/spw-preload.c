/* SPDX-License-Identifier: MIT */
/*
 * libspillway-preload.so: an unmodified pre-forking server (nginx) on
 * spillway, through LD_PRELOAD.
 *
 * Master side. listen() notes each listening socket. Just before the
 * process forks (a pthread_atfork() prepare handler, so fork() from
 * daemon() counts too), the TCP listeners with SO_REUSEPORT noted since
 * the last fork are grouped by local address, and each address becomes
 * one spillway group (spw_group_create). The group fd is inherited by
 * the workers; it is handed to an exec'd image only with listeners that
 * image inherits (nginx's binary upgrade), described in
 * SPW_PRELOAD_GROUPS, with LD_PRELOAD put back (nginx clears the
 * environment of the binary it execs).
 *
 * Worker side. A worker's member is the listener it registers: on
 * epoll_ctl(ADD/MOD/DEL), poll() or accept() of a member's listener the
 * member's ring is opened, and from then on the ring fd stands in for the
 * listener in epoll and poll (same events, same data), and accept() on
 * the listener returns the ring's next CQE — after one non-blocking enter
 * when none is ready (the module hands connections over only at enter).
 * close() of the listener closes the ring.
 *
 * One consumer per ring. CQE fds are installed in the file table of the
 * process that entered, and head is shared: two processes reaping one
 * ring would take each other's fd numbers. During `nginx -s reload` the
 * new workers start 100 ms before the old ones stop, and during a binary
 * upgrade both sets run for as long as the operator likes, so a member's
 * ring is often open in two processes. Each process therefore takes a
 * POSIX write lock on byte <member> of the group file before it enters
 * the ring. A process that cannot get it keeps its ring open (so the
 * ring stays live and no connection is reset for want of a ring) but
 * serves that listener with plain accept() — the module allows that —
 * and takes the lock, and the ring, at its next accept() once the old
 * owner has released it. POSIX locks belong to the process, are not
 * inherited by fork() and vanish when their process dies, which is
 * exactly the ownership wanted.
 *
 * Nothing is lost in the hand-over. nginx accepts one connection per
 * event, so an old worker may close its listener holding CQEs it was
 * handed and never accepted; it passes them (SCM_RIGHTS) to the process
 * waiting for its member before letting go of the lock (ring_release(),
 * handoff_open()). And the master keeps every ring open without
 * consuming it (keep_rings()), so that a group never has all its rings
 * closed — the module would reset arriving connections — when the old
 * workers let go before the new ones arrive.
 *
 * Where /dev/spillway is missing or a call fails, everything passes
 * through unchanged, and the preload says so once on stderr.
 *
 * Locking: one mutex for the bookkeeping and for consuming rings. Every
 * interposer first asks the lock-free fd map whether the fd is one of
 * ours, so the calls a server makes per connection (close, epoll_ctl on
 * connections) cost two loads.
 */
#define _GNU_SOURCE
/* poll() is defined here, not wrapped by a fortified inline */
#undef _FORTIFY_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#include "spillway.h"
#include "table.h"

#define PL_EXPORT	__attribute__((visibility("default")))

/* ------------------------------------------------------------------ */
/* the real functions                                                  */

static struct {
	int (*close)(int);
	int (*listen)(int, int);
	int (*accept)(int, struct sockaddr *, socklen_t *);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*epoll_ctl)(int, int, int, struct epoll_event *);
	int (*poll)(struct pollfd *, nfds_t, int);
	int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*close_range)(unsigned, unsigned, int);
	int (*execve)(const char *, char *const[], char *const[]);
	bool done;
} real;

/*
 * Resolved on first use as well as in the constructor: another
 * library's constructor may close() or listen() before ours runs.
 * Racing threads store the same values.
 */
static void real_resolve(void)
{
	real.close = dlsym(RTLD_NEXT, "close");
	real.listen = dlsym(RTLD_NEXT, "listen");
	real.accept = dlsym(RTLD_NEXT, "accept");
	real.accept4 = dlsym(RTLD_NEXT, "accept4");
	real.epoll_ctl = dlsym(RTLD_NEXT, "epoll_ctl");
	real.poll = dlsym(RTLD_NEXT, "poll");
	real.ppoll = dlsym(RTLD_NEXT, "ppoll");
	real.dup2 = dlsym(RTLD_NEXT, "dup2");
	real.dup3 = dlsym(RTLD_NEXT, "dup3");
	real.close_range = dlsym(RTLD_NEXT, "close_range");
	real.execve = dlsym(RTLD_NEXT, "execve");
	__atomic_store_n(&real.done, true, __ATOMIC_RELEASE);
}

#define REAL(fn)	(__atomic_load_n(&real.done, __ATOMIC_ACQUIRE) ? 0 : (real_resolve(), 0), real.fn)

/* ------------------------------------------------------------------ */
/* state                                                               */

/* One group: made here before a fork, or inherited across exec. */
struct pl_group {
	int fd;			/* the group fd; -1 once closed */
	dev_t dev;		/* the group file: names the hand-over sockets */
	ino_t ino;
	unsigned nr;		/* members */
	unsigned open;		/* members whose listener fd is open here */
	unsigned rings;		/* rings of this group open here */
	int *keep;		/* a ring fd per member, never consumed: see keep_rings() */
	char name[64];		/* the address, for messages */
	struct pl_group *next;
};

/* A member's ring, opened by this process. */
struct pl_ring {
	struct spw_ring ring;
	struct spw_pl_flags fl;
	struct pl_group *group;
	unsigned idx;
	unsigned refs;		/* the listener's, and each sleeping accept()'s */
	bool owner;		/* holds the member's lock: the one consumer */
	bool dead;		/* its listener was closed while an accept() slept */
};

enum pl_mode {
	PL_IDLE,	/* no ring opened yet */
	PL_RING,	/* this process consumes the ring; the ring fd stands in */
	PL_WAIT,	/* ring open, another process consumes it: plain accept() */
	PL_PLAIN,	/* the ring could not be opened: plain accept() for good */
};

/* A listening socket: a candidate before the fork, a member after. */
struct pl_lsn {
	int fd;
	dev_t dev;		/* the socket's inode: notices a reused fd number */
	ino_t ino;
	bool member;
	struct pl_group *group;
	unsigned idx;		/* member index */
	enum pl_mode mode;
	struct pl_ring *ring;
	struct spw_pl_regs regs;	/* the server's epoll registrations of it */
	int handoff;		/* hand-over socket while waiting for the ring, or -1 */
	struct pl_lsn *next;
};

enum {
	SAY_NODEV	= 1 << 0,
	SAY_CREATE	= 1 << 1,
	SAY_RING	= 1 << 2,
	SAY_LOCK	= 1 << 3,
	SAY_ENV		= 1 << 4,
	SAY_DRAIN	= 1 << 5,
	SAY_REGS	= 1 << 6,
	SAY_INHERIT	= 1 << 7,
	SAY_TRACK	= 1 << 8,
	SAY_HANDOFF	= 1 << 9,
};

static struct {
	pthread_mutex_t lock;
	struct spw_pl_fdmap map;
	struct pl_lsn *lsns;
	struct pl_group *groups;
	struct spw_group_params params;
	int dev_errno;		/* why /dev/spillway cannot be used, or 0 */
	bool disabled;		/* pass everything through from now on */
	bool verbose;		/* SPW_PRELOAD_VERBOSE: say what is done, too */
	unsigned said;		/* SAY_*: each failure is reported once */
	char self[PATH_MAX];	/* this library, for LD_PRELOAD across exec */
	long long handoff_ms;	/* how long a leaving consumer waits for the next one */
	char *env_keep[5];	/* SPW_* settings to hand across exec */
	unsigned nr_env_keep;
} pl = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

/* One line on stderr, written at once (workers share it with the master). */
static void say_v(const char *fmt, va_list ap)
{
	char buf[512];
	int n, saved = errno;

	n = snprintf(buf, sizeof(buf), "spillway-preload[%d]: ", (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(buf))
		n = 0;
	vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	n = (int)strlen(buf);
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
		/* nowhere else to say it */
	}
	errno = saved;
}

static __attribute__((format(printf, 2, 3))) void say_once(unsigned what, const char *fmt, ...)
{
	va_list ap;

	if (pl.said & what)
		return;
	pl.said |= what;
	va_start(ap, fmt);
	say_v(fmt, ap);
	va_end(ap);
}

static __attribute__((format(printf, 1, 2))) void say_verbose(const char *fmt, ...)
{
	va_list ap;

	if (!pl.verbose)
		return;
	va_start(ap, fmt);
	say_v(fmt, ap);
	va_end(ap);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static inline bool tracked(int fd)
{
	return !spw_pl_fdmap_empty(&pl.map) && spw_pl_fdmap_get(&pl.map, fd);
}

static struct pl_lsn *lsn_get(int fd)
{
	return spw_pl_fdmap_get(&pl.map, fd);
}

/* ------------------------------------------------------------------ */
/* groups and rings                                                    */

static void group_unlink(struct pl_group *g)
{
	struct pl_group **pp;

	for (pp = &pl.groups; *pp; pp = &(*pp)->next) {
		if (*pp == g) {
			*pp = g->next;
			return;
		}
	}
}

/*
 * The group fd goes when the process has neither a member's listener
 * nor a ring of it left: nothing here can use it any more, and a later
 * fork must not hand it on. Closing it also drops any lock this process
 * still held on it, which is why it waits for the rings.
 */
static void group_maybe_close(struct pl_group *g)
{
	unsigned i;

	if (g->open || g->rings)
		return;
	for (i = 0; g->keep && i < g->nr; i++)
		if (g->keep[i] >= 0)
			REAL(close)(g->keep[i]);
	free(g->keep);
	if (g->fd >= 0)
		REAL(close)(g->fd);
	group_unlink(g);
	free(g);
}

/*
 * The process that makes (or inherits across exec) a group opens every
 * member's ring once and never consumes them. A ring whose last fd
 * closes is never a target again, and when no ring of a group is open
 * the module resets each arriving connection. Between an nginx reload's
 * old workers letting go and its new ones registering (which on a busy
 * machine can come later), that would be every ring; with the master
 * holding them they stay open, and connections wait in their listeners'
 * queues for the new workers, as they would without spillway. The cost:
 * a dead worker's waiting connections move to its siblings after
 * stall_ms instead of at once.
 */
static void keep_rings(struct pl_group *g)
{
	unsigned i;
	int fd;

	g->keep = malloc(g->nr * sizeof(*g->keep));
	for (i = 0; g->keep && i < g->nr; i++) {
		fd = spw_ring_open(g->fd, i);
		g->keep[i] = fd;
		if (fd < 0)
			say_once(SAY_RING, "spw_ring_open(member %u of %s) to keep it open: %s", i,
				 g->name, strerror(-fd));
	}
}

static int member_lock(struct pl_group *g, unsigned idx, short type)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = idx,
		.l_len = 1,
	};

	return fcntl(g->fd, F_SETLK, &fl) ? -errno : 0;
}

/*
 * Try to become the one consumer of @r. The ring holds nothing of ours
 * yet, and whatever CQEs it holds were installed in a process that has
 * released the lock after draining them or has died (its fds closed
 * with it): they are nobody's, and skipped.
 */
static bool ring_take(struct pl_ring *r)
{
	int err = member_lock(r->group, r->idx, F_WRLCK);
	unsigned tail;

	if (err == -EAGAIN || err == -EACCES)
		return false;
	if (err)
		say_once(SAY_LOCK, "cannot lock member %u of %s (%s): assuming no other process "
			 "consumes its ring", r->idx, r->group->name, strerror(-err));
	tail = spw_smp_load_acquire(r->ring.ktail);
	spw_smp_store_release(r->ring.khead, tail);
	r->fl.flags = r->ring.accept_flags;
	r->fl.known_from = tail;
	r->owner = true;
	say_verbose("member %u of %s: this process consumes its ring (fd %d)", r->idx,
		    r->group->name, r->ring.ring_fd);
	return true;
}

/*
 * Send @fd, a connection this process was handed but will not accept, to
 * the process waiting to consume member @idx next (see handoff_open()).
 * One fd per datagram: the receiver returns one per accept() and stays
 * readable while more wait. Returns 0 or -errno (-ECONNREFUSED: nobody
 * waits for the member).
 */
static int handoff_send(int s, const struct pl_group *g, unsigned idx, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	struct sockaddr_un sun;
	char byte = 0;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr msg = {
		.msg_name = &sun,
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = c.buf,
		.msg_controllen = sizeof(c.buf),
	};
	struct cmsghdr *cm;

	msg.msg_namelen = spw_pl_handoff_name((unsigned long)g->dev, (unsigned long)g->ino, idx, &sun);
	memset(&c, 0, sizeof(c));
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(s, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* Last reference: give back what this process holds of the ring. */
static void ring_release(struct pl_ring *r)
{
	struct pl_group *g = r->group;
	struct spw_cqe *cqe;
	unsigned sent = 0, lost = 0;
	int s = -1, err = 0;

	if (r->owner) {
		/*
		 * Connections handed to this process that the server will never
		 * accept now (nginx accepts one per event, so a batch from one
		 * enter can outlive its listener): they are fds in our table.
		 * The process that waits to consume this member next gets them
		 * over its hand-over socket, before we let go of the lock; with
		 * nobody waiting they are closed, so that their clients learn at
		 * once. Either way the next owner finds the ring empty.
		 */
		long long deadline = now_ms() + pl.handoff_ms;

		while (!spw_peek_cqe(&r->ring, &cqe)) {
			if (s < 0 && !err) {
				s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
				err = s < 0 ? errno : 0;
			}
			/*
			 * Nobody waits yet: during a reload nginx signals the old
			 * workers 100 ms after starting the new ones, which on a
			 * busy machine may not have reached epoll_ctl() yet. Their
			 * registration finds our lock held, so they bind the name
			 * while we wait here; the clients wait with us.
			 */
			while (s >= 0 && (err = -handoff_send(s, g, r->idx, cqe->fd)) &&
			       (err == ECONNREFUSED || err == EAGAIN) && now_ms() < deadline)
				usleep(10000);
			if (s >= 0 && !err)
				sent++;
			else
				lost++;
			REAL(close)(cqe->fd);	/* a sent fd lives on in the datagram */
			spw_cqe_seen(&r->ring, cqe);
			if (err)
				deadline = 0;	/* waited once: the rest go at once */
		}
		if (s >= 0)
			REAL(close)(s);
		if (sent)
			say_verbose("member %u of %s: handed %u connection(s) over to its next consumer",
				    r->idx, g->name, sent);
		if (lost)
			say_once(SAY_DRAIN, "member %u of %s: closed %u connection(s) handed over after "
				 "the server stopped accepting, with no process waiting to take them "
				 "(%s; nginx: `multi_accept on` avoids this)", r->idx, g->name, lost,
				 strerror(err));
	}
	spw_ring_exit(&r->ring);
	if (r->owner && g->fd >= 0)
		member_lock(g, r->idx, F_UNLCK);
	g->rings--;
	free(r);
	group_maybe_close(g);
}

static void ring_put(struct pl_ring *r)
{
	if (!--r->refs)
		ring_release(r);
}

/*
 * A process that waits for a member's ring (PL_WAIT) binds the member's
 * hand-over socket: when the ring's consumer lets go with connections it
 * was handed but never accepted, it sends them here (ring_release()), and
 * accept() returns them first. The socket is in the server's epoll sets
 * with the listener's registration, so that a worker asleep in
 * epoll_wait() learns of them. Best effort: without it (another waiter
 * has the name), those connections are closed instead.
 */
static void handoff_open(struct pl_lsn *e)
{
	struct sockaddr_un sun;
	socklen_t len;
	int s, one = 1;

	s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	len = spw_pl_handoff_name((unsigned long)e->group->dev, (unsigned long)e->group->ino,
				  e->idx, &sun);
	/* the sender's credentials come with each datagram: see handoff_recv() */
	if (setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) ||
	    bind(s, (struct sockaddr *)&sun, len)) {
		say_once(SAY_HANDOFF, "member %u of %s: no hand-over socket (%s)", e->idx,
			 e->group->name, strerror(errno));
		REAL(close)(s);
		return;
	}
	e->handoff = s;
}

static void handoff_close(struct pl_lsn *e)
{
	unsigned i;

	if (e->handoff < 0)
		return;
	for (i = 0; i < e->regs.nr; i++)
		REAL(epoll_ctl)(e->regs.r[i].epfd, EPOLL_CTL_DEL, e->handoff, NULL);
	REAL(close)(e->handoff);
	e->handoff = -1;
}

/*
 * One handed-over connection, or -1. Only from our own user (or root):
 * anyone may send to an abstract socket, and what comes out of here is
 * served as an accepted connection.
 */
static int handoff_recv(struct pl_lsn *e)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(4 * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
	} c;
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };

	for (;;) {
		struct msghdr msg = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = c.buf,
			.msg_controllen = sizeof(c.buf),
		};
		int fds[4], nfd = 0, i;
		bool trusted = false;
		struct cmsghdr *cm;

		if (recvmsg(e->handoff, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
			return -1;
		for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			if (cm->cmsg_level != SOL_SOCKET)
				continue;
			if (cm->cmsg_type == SCM_RIGHTS) {
				int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));

				for (i = 0; i < n && nfd < 4; i++)
					memcpy(&fds[nfd++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			} else if (cm->cmsg_type == SCM_CREDENTIALS) {
				struct ucred uc;

				memcpy(&uc, CMSG_DATA(cm), sizeof(uc));
				trusted = uc.uid == geteuid() || uc.uid == 0;
			}
		}
		if (trusted && nfd == 1 && !(msg.msg_flags & MSG_CTRUNC))
			return fds[0];
		for (i = 0; i < nfd; i++)
			REAL(close)(fds[i]);
	}
}

/* Open @e's ring on first use: decides the listener's mode for good or until owned. */
static void lsn_open_ring(struct pl_lsn *e)
{
	struct pl_group *g = e->group;
	struct pl_ring *r;
	struct stat st;
	int rfd, ret;

	if (e->mode != PL_IDLE)
		return;
	e->mode = PL_PLAIN;
	/* closed behind our back (closefrom(), a raw syscall) and the number reused? */
	if (fstat(e->fd, &st) || st.st_dev != e->dev || st.st_ino != e->ino || g->fd < 0)
		return;
	r = calloc(1, sizeof(*r));
	if (!r) {
		say_once(SAY_RING, "out of memory for a ring: passing through");
		return;
	}
	rfd = spw_ring_open(g->fd, e->idx);
	if (rfd < 0) {
		say_once(SAY_RING, "spw_ring_open(member %u of %s): %s: passing through", e->idx,
			 g->name, strerror(-rfd));
		free(r);
		return;
	}
	ret = spw_ring_init(&r->ring, rfd);
	if (ret < 0) {
		say_once(SAY_RING, "spw_ring_init(member %u of %s): %s: passing through", e->idx,
			 g->name, strerror(-ret));
		REAL(close)(rfd);
		free(r);
		return;
	}
	r->group = g;
	r->idx = e->idx;
	r->refs = 1;
	g->rings++;
	e->ring = r;
	e->mode = ring_take(r) ? PL_RING : PL_WAIT;
	if (e->mode == PL_WAIT) {
		handoff_open(e);
		say_verbose("member %u of %s: another process consumes its ring; plain accept() "
			    "until it lets go", e->idx, g->name);
	}
}

/* PL_WAIT -> PL_RING: move every epoll registration to the ring fd. */
static void lsn_switch_to_ring(struct pl_lsn *e)
{
	unsigned i = 0;

	while (i < e->regs.nr) {
		struct spw_pl_reg *reg = &e->regs.r[i];

		REAL(epoll_ctl)(reg->epfd, EPOLL_CTL_DEL, e->fd, NULL);
		if (REAL(epoll_ctl)(reg->epfd, EPOLL_CTL_ADD, e->ring->ring.ring_fd, &reg->ev)) {
			/* that epoll fd is gone: nothing waits there any more */
			spw_pl_regs_del(&e->regs, reg->epfd);
			continue;
		}
		i++;
	}
	e->mode = PL_RING;
}

/* A member in PL_WAIT asks again whether its ring is free now. */
static void lsn_retry(struct pl_lsn *e)
{
	if (e->mode == PL_WAIT && ring_take(e->ring))
		lsn_switch_to_ring(e);
}

static void lsn_unlink(struct pl_lsn *e)
{
	struct pl_lsn **pp;

	for (pp = &pl.lsns; *pp; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			return;
		}
	}
}

/* The fd of @e is being closed (or replaced): forget it and what hangs on it. */
static void lsn_forget(struct pl_lsn *e)
{
	unsigned i;

	spw_pl_fdmap_set(&pl.map, e->fd, NULL);
	lsn_unlink(e);
	handoff_close(e);
	if (e->ring) {
		/*
		 * An epoll registration lives as long as its file, and a forked
		 * child may still hold the ring file: take ours out explicitly.
		 */
		if (e->mode == PL_RING)
			for (i = 0; i < e->regs.nr; i++)
				REAL(epoll_ctl)(e->regs.r[i].epfd, EPOLL_CTL_DEL,
						e->ring->ring.ring_fd, NULL);
		e->ring->dead = true;
		ring_put(e->ring);
	}
	if (e->member) {
		e->group->open--;
		group_maybe_close(e->group);
	}
	free(e);
}

static struct pl_lsn *lsn_new(int fd, const struct stat *st)
{
	struct pl_lsn *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->fd = fd;
	e->dev = st->st_dev;
	e->ino = st->st_ino;
	e->handoff = -1;
	if (spw_pl_fdmap_set(&pl.map, fd, e)) {
		free(e);
		return NULL;
	}
	e->next = pl.lsns;
	pl.lsns = e;
	return e;
}

/* ------------------------------------------------------------------ */
/* master side: listeners become groups before a fork                  */

static int sockopt_int(int fd, int level, int name)
{
	int v = 0;
	socklen_t len = sizeof(v);

	return getsockopt(fd, level, name, &v, &len) ? -1 : v;
}

/* Still the socket listen() saw, listening, TCP, SO_REUSEPORT? Its address. */
static bool candidate_ok(const struct pl_lsn *e, struct sockaddr_storage *ss, socklen_t *len)
{
	struct stat st;

	if (fstat(e->fd, &st) || st.st_dev != e->dev || st.st_ino != e->ino)
		return false;
	if (sockopt_int(e->fd, SOL_SOCKET, SO_ACCEPTCONN) != 1 ||
	    sockopt_int(e->fd, SOL_SOCKET, SO_TYPE) != SOCK_STREAM ||
	    sockopt_int(e->fd, SOL_SOCKET, SO_PROTOCOL) != IPPROTO_TCP ||
	    sockopt_int(e->fd, SOL_SOCKET, SO_REUSEPORT) != 1)
		return false;
	*len = sizeof(*ss);
	if (getsockname(e->fd, (struct sockaddr *)ss, len))
		return false;
	return ss->ss_family == AF_INET || ss->ss_family == AF_INET6;
}

/* Called with the lock held, just before fork(). */
static void make_groups(void)
{
	struct sockaddr_storage *addrs = NULL;
	struct pl_lsn **cand = NULL, *e, *next;
	socklen_t *lens = NULL;
	unsigned *grp = NULL, *idx = NULL;
	int *fds = NULL;
	unsigned n = 0, i, j, m;

	for (e = pl.lsns; e; e = e->next)
		n += !e->member;
	if (!n)
		return;
	cand = calloc(n, sizeof(*cand));
	addrs = calloc(n, sizeof(*addrs));
	lens = calloc(n, sizeof(*lens));
	grp = calloc(n, sizeof(*grp));
	idx = calloc(n, sizeof(*idx));
	fds = calloc(n, sizeof(*fds));
	n = 0;
	for (e = pl.lsns; e; e = next) {
		next = e->next;
		if (e->member)
			continue;
		if (!cand || !addrs || !lens || !grp || !idx || !fds ||
		    !candidate_ok(e, &addrs[n], &lens[n])) {
			lsn_forget(e);	/* not ours to group: plain from now on */
			continue;
		}
		cand[n++] = e;
	}
	if (n && pl.dev_errno) {
		say_once(SAY_NODEV, "%s: %s: passing through", SPW_DEVICE_PATH, strerror(pl.dev_errno));
		pl.disabled = true;
		while (n)
			lsn_forget(cand[--n]);
		goto out;
	}
	if (!n)
		goto out;
	/* the list is newest first; members go in the order they were made */
	for (i = 0; i < n / 2; i++) {
		struct pl_lsn *t = cand[i];
		struct sockaddr_storage ts = addrs[i];
		socklen_t tl = lens[i];

		cand[i] = cand[n - 1 - i];
		cand[n - 1 - i] = t;
		addrs[i] = addrs[n - 1 - i];
		addrs[n - 1 - i] = ts;
		lens[i] = lens[n - 1 - i];
		lens[n - 1 - i] = tl;
	}
	spw_pl_group_by_addr(addrs, lens, n, grp);
	for (i = 0; i < n; i++) {
		struct pl_group *g;
		struct stat gst;
		int gfd;

		if (grp[i] != i)
			continue;
		for (m = 0, j = i; j < n; j++) {
			if (grp[j] == i) {
				idx[j] = m;
				fds[m++] = cand[j]->fd;
			}
		}
		g = calloc(1, sizeof(*g));
		if (!g) {
			gfd = -ENOMEM;
		} else {
			spw_pl_addr_str(&addrs[i], g->name, sizeof(g->name));
			gfd = spw_group_create(fds, m, &pl.params);
		}
		if (gfd < 0) {
			char name[64];

			spw_pl_addr_str(&addrs[i], name, sizeof(name));
			say_once(SAY_CREATE, "spw_group_create(%s, %u listener%s): %s: passing through",
				 name, m, m == 1 ? "" : "s", strerror(-gfd));
			free(g);
			for (j = i; j < n; j++)
				if (grp[j] == i)
					lsn_forget(cand[j]);
			continue;
		}
		g->fd = gfd;
		g->nr = m;
		g->open = m;
		if (!fstat(gfd, &gst)) {
			g->dev = gst.st_dev;
			g->ino = gst.st_ino;
		}
		g->next = pl.groups;
		pl.groups = g;
		for (j = i; j < n; j++) {
			if (grp[j] == i) {
				cand[j]->member = true;
				cand[j]->group = g;
				cand[j]->idx = idx[j];
			}
		}
		keep_rings(g);
		say_verbose("group %s: %u listener%s, group fd %d", g->name, m, m == 1 ? "" : "s", gfd);
	}
out:
	free(cand);
	free(addrs);
	free(lens);
	free(grp);
	free(idx);
	free(fds);
}

static void pl_prepare(void)
{
	int saved = errno;

	pthread_mutex_lock(&pl.lock);
	if (!pl.disabled)
		make_groups();
	errno = saved;
	/* held across the fork, so the child's copy of the state is whole */
}

static void pl_parent(void)
{
	pthread_mutex_unlock(&pl.lock);
}

/*
 * The child has copies of our ring fds and mappings, but not the locks:
 * it is not the consumer of any ring. It lets go of its copies (the
 * parent's connections in them are the parent's) and opens a ring of its
 * own if it ever registers a listener.
 */
static void pl_child(void)
{
	struct pl_lsn *e;

	pthread_mutex_init(&pl.lock, NULL);
	for (e = pl.lsns; e; e = e->next) {
		struct pl_ring *r = e->ring;

		if (e->handoff >= 0) {
			/* the name stays bound by the parent's copy */
			REAL(close)(e->handoff);
			e->handoff = -1;
		}
		if (!r)
			continue;
		spw_ring_exit(&r->ring);
		r->group->rings--;
		free(r);
		e->ring = NULL;
		e->mode = PL_IDLE;
		e->regs.nr = 0;
	}
}

/* ------------------------------------------------------------------ */
/* exec: hand on the groups whose listeners the new image inherits     */

struct adopt_ctx {
	unsigned groups;
};

/* One group of SPW_PRELOAD_GROUPS, in the constructor of the new image. */
static int adopt_group(void *arg, int gfd, const int *fds, unsigned nr)
{
	struct adopt_ctx *ctx = arg;
	struct pl_group *g;
	struct stat st;
	char link[64], path[64];
	ssize_t n;
	unsigned i;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", gfd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n >= 0) {
		link[n] = '\0';
		if (strcmp(link, "anon_inode:[spillway-group]"))
			goto bad;
	}
	if (spw_group_stats(gfd, NULL, 0) != (int)nr)
		goto bad;
	g = calloc(1, sizeof(*g));
	if (!g)
		return 0;
	g->fd = gfd;
	g->nr = nr;
	if (!fstat(gfd, &st)) {
		g->dev = st.st_dev;
		g->ino = st.st_ino;
	}
	g->next = pl.groups;
	pl.groups = g;
	for (i = 0; i < nr; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		struct pl_lsn *e;

		if (fds[i] < 0 || fstat(fds[i], &st) || !S_ISSOCK(st.st_mode) ||
		    sockopt_int(fds[i], SOL_SOCKET, SO_ACCEPTCONN) != 1)
			continue;
		e = lsn_new(fds[i], &st);
		if (!e)
			continue;
		e->member = true;
		e->group = g;
		e->idx = i;
		g->open++;
		if (!g->name[0] && !getsockname(fds[i], (struct sockaddr *)&ss, &len))
			spw_pl_addr_str(&ss, g->name, sizeof(g->name));
	}
	if (!g->name[0])
		snprintf(g->name, sizeof(g->name), "group fd %d", gfd);
	if (g->open)
		keep_rings(g);
	say_verbose("inherited group %s: %u members, %u listeners here, group fd %d", g->name,
		    nr, g->open, gfd);
	ctx->groups++;
	group_maybe_close(g);
	return 0;
bad:
	say_once(SAY_INHERIT, "%s: fd %d is not a spillway group of %u members: ignored",
		 SPW_PL_ENV_GROUPS, gfd, nr);
	return 0;
}

PL_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	char desc[16384] = "", *setv[1 + sizeof(pl.env_keep) / sizeof(pl.env_keep[0])];
	int restore[64], restore_flags[64], *fds = NULL;
	unsigned nr_restore = 0, nr_set = 0, i;
	char **env = NULL, *var = NULL;
	struct pl_group *g;
	int ret, err;

	if (!__atomic_load_n(&pl.groups, __ATOMIC_RELAXED))
		return REAL(execve)(path, argv, envp);

	pthread_mutex_lock(&pl.lock);
	fds = malloc(SPW_PL_MAX_MEMBERS * sizeof(*fds));
	for (g = pl.groups; g && fds; g = g->next) {
		struct pl_lsn *e;
		bool keep = false;
		int fl;

		if (g->fd < 0)
			continue;
		for (i = 0; i < g->nr; i++)
			fds[i] = -1;
		for (e = pl.lsns; e; e = e->next) {
			if (e->group != g || !e->member)
				continue;
			fl = fcntl(e->fd, F_GETFD);
			if (fl >= 0 && !(fl & FD_CLOEXEC)) {
				fds[e->idx] = e->fd;
				keep = true;
			}
		}
		/*
		 * A process that consumes a ring keeps the ring's lock across
		 * exec if it keeps the group fd, and the new image would never
		 * let go of it: such a group is not handed on.
		 */
		if (g->rings)
			keep = false;
		if (keep && spw_pl_desc_add(desc, sizeof(desc), g->fd, fds, g->nr))
			keep = false;
		fl = fcntl(g->fd, F_GETFD);
		if (fl < 0 || !!(fl & FD_CLOEXEC) == !keep || nr_restore == 64)
			continue;
		if (fcntl(g->fd, F_SETFD, keep ? fl & ~FD_CLOEXEC : fl | FD_CLOEXEC) == 0) {
			restore[nr_restore] = g->fd;
			restore_flags[nr_restore++] = fl;
		}
	}
	free(fds);
	if (desc[0] && asprintf(&var, "%s=%s", SPW_PL_ENV_GROUPS, desc) > 0) {
		setv[nr_set++] = var;
		for (i = 0; i < pl.nr_env_keep; i++)
			setv[nr_set++] = pl.env_keep[i];
		/* nginx execs its new binary with an environment of its own making */
		env = spw_pl_env_build(envp, (const char *const *)setv, nr_set,
				       pl.self[0] ? pl.self : NULL);
	}
	pthread_mutex_unlock(&pl.lock);

	ret = REAL(execve)(path, argv, env ? env : envp);
	err = errno;
	for (i = 0; i < nr_restore; i++)
		fcntl(restore[i], F_SETFD, restore_flags[i]);
	free(env);
	free(var);
	errno = err;
	return ret;
}

/* ------------------------------------------------------------------ */
/* the interposed socket calls                                         */

PL_EXPORT int listen(int fd, int backlog)
{
	struct pl_lsn *e;
	struct stat st;
	int ret, saved;

	ret = REAL(listen)(fd, backlog);
	if (ret || __atomic_load_n(&pl.disabled, __ATOMIC_RELAXED))
		return ret;
	saved = errno;
	if (fstat(fd, &st) || !S_ISSOCK(st.st_mode))
		goto out;
	pthread_mutex_lock(&pl.lock);
	e = lsn_get(fd);
	/* a member listening again (a new backlog), or a candidate: nothing to do */
	if (e && (e->dev != st.st_dev || e->ino != st.st_ino)) {
		lsn_forget(e);	/* the number was reused behind our back */
		e = NULL;
	}
	if (!e && !pl.disabled && !lsn_new(fd, &st))
		say_once(SAY_TRACK, "cannot track listener fd %d: passing it through", fd);
	pthread_mutex_unlock(&pl.lock);
out:
	errno = saved;
	return 0;
}

/* A CQE's fd got flags of an earlier enter: make them the caller's. */
static void fix_flags(int fd, unsigned want)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0 && !(fl & O_NONBLOCK) != !(want & SOCK_NONBLOCK))
		fcntl(fd, F_SETFL, fl ^ O_NONBLOCK);
	fl = fcntl(fd, F_GETFD);
	if (fl >= 0 && !(fl & FD_CLOEXEC) != !(want & SOCK_CLOEXEC))
		fcntl(fd, F_SETFD, fl ^ FD_CLOEXEC);
}

/*
 * accept() from @e's ring; called with the lock held, returns with it
 * released. The next CQE if one is there; else one non-blocking enter
 * (which hands over whatever waits for this ring, or a stalled
 * sibling's work) and look again; else EAGAIN for a non-blocking
 * listener, and a blocking enter for a blocking one.
 */
static int ring_accept(struct pl_lsn *e, struct sockaddr *addr, socklen_t *len, int flags)
{
	struct pl_ring *r = e->ring;
	bool entered = false;
	int ret, err = 0;
	unsigned want;

	ret = spw_pl_accept_flags(flags, &want);
	if (!ret)
		ret = spw_pl_addr_args_ok(addr, len);
	if (ret) {
		pthread_mutex_unlock(&pl.lock);
		errno = -ret;
		return -1;
	}
	r->refs++;	/* @e may be closed while we sleep; @r stays */
	for (;;) {
		struct spw_cqe *cqe;

		if (!spw_peek_cqe(&r->ring, &cqe)) {
			unsigned idx = *r->ring.khead;
			struct spw_addr peer = cqe->peer;
			bool known = r->fl.flags == want && spw_pl_flags_known(&r->fl, idx);
			int fd = cqe->fd;

			/* copied out first: once seen, the slot is the kernel's */
			spw_cqe_seen(&r->ring, cqe);
			ring_put(r);
			pthread_mutex_unlock(&pl.lock);
			if (!known)
				fix_flags(fd, want);
			if (spw_pl_copy_addr(&peer, addr, len) && addr)
				*len = 0;	/* a family this build does not know */
			return fd;
		}
		if (r->dead) {
			err = EBADF;
			break;
		}
		if (!entered) {
			if (spw_pl_flags_want(&r->fl, want, spw_smp_load_acquire(r->ring.ktail)))
				spw_ring_set_accept_flags(&r->ring, want);
			/*
			 * One connection per accept(): what a killed worker was
			 * handed and never accepted dies with it, what still
			 * waits in the module goes to a sibling.
			 */
			ret = spw_enter_max(&r->ring, 1, 0, NULL);
			entered = true;
			/*
			 * EBUSY: the member's previous consumer died holding CQEs
			 * and the kernel has not discarded them yet (its lock went
			 * with its group fd, before its ring fd closed): nothing
			 * for us yet, as EAGAIN. EMFILE and the like: the
			 * connections waiting for this ring go to siblings.
			 */
			if (ret == -EBUSY)
				ret = -EAGAIN;
			if (ret < 0)
				err = -ret;
			continue;
		}
		if (err)
			break;
		ret = fcntl(e->fd, F_GETFL);
		if (ret < 0 || (ret & O_NONBLOCK)) {
			err = ret < 0 ? errno : EAGAIN;
			break;
		}
		/* a blocking listener: sleep in the enter, as accept() sleeps */
		r->fl.sleepers++;
		pthread_mutex_unlock(&pl.lock);
		ret = spw_enter_max(&r->ring, 1, 1, NULL);
		pthread_mutex_lock(&pl.lock);
		r->fl.sleepers--;
		if (ret == -EBUSY) {
			/* as above: the previous consumer's CQEs go soon */
			pthread_mutex_unlock(&pl.lock);
			usleep(1000);
			pthread_mutex_lock(&pl.lock);
			continue;
		}
		if (ret < 0)
			err = -ret;	/* EINTR: a signal without SA_RESTART, as accept() */
		/* @e may be gone now; @r tells (dead) */
	}
	ring_put(r);
	pthread_mutex_unlock(&pl.lock);
	errno = err;
	return -1;
}

/*
 * accept() of a connection handed over by the member's previous consumer;
 * called with the lock held. Returns with it released, except for
 * -ENOENT (none waits: go on as usual, lock held). In PL_RING nothing more
 * can come (the sender let go of the ring after sending), so the socket
 * is closed once empty.
 */
static int handoff_accept(struct pl_lsn *e, struct sockaddr *addr, socklen_t *len, int flags)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	unsigned want;
	int fd, ret;

	ret = spw_pl_accept_flags(flags, &want);
	if (!ret)
		ret = spw_pl_addr_args_ok(addr, len);
	if (ret) {
		pthread_mutex_unlock(&pl.lock);
		errno = -ret;
		return -1;
	}
	fd = handoff_recv(e);
	if (fd < 0) {
		if (e->mode == PL_RING)
			handoff_close(e);
		return -ENOENT;
	}
	pthread_mutex_unlock(&pl.lock);
	fix_flags(fd, want);
	if (getpeername(fd, (struct sockaddr *)&ss, &sslen))
		sslen = 0;
	spw_pl_copy_sockaddr(&ss, sslen, addr, len);
	return fd;
}

static int do_accept(int fd, struct sockaddr *addr, socklen_t *len, int flags, bool four)
{
	struct pl_lsn *e;

	if (!tracked(fd))
		goto plain;
	pthread_mutex_lock(&pl.lock);
	e = lsn_get(fd);
	if (e && e->member) {
		lsn_open_ring(e);	/* a server that accepts without polling */
		lsn_retry(e);
		if (e->handoff >= 0) {
			int ret = handoff_accept(e, addr, len, flags);

			if (ret != -ENOENT)
				return ret;
		}
		if (e->mode == PL_RING)
			return ring_accept(e, addr, len, flags);
	}
	pthread_mutex_unlock(&pl.lock);
plain:
	return four ? REAL(accept4)(fd, addr, len, flags) : REAL(accept)(fd, addr, len);
}

PL_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	return do_accept(fd, addr, len, 0, false);
}

PL_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	return do_accept(fd, addr, len, flags, true);
}

PL_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct pl_lsn *e;
	int target, ret, err;

	if (!tracked(fd))
		return REAL(epoll_ctl)(epfd, op, fd, ev);
	pthread_mutex_lock(&pl.lock);
	e = lsn_get(fd);
	if (!e || !e->member) {
		pthread_mutex_unlock(&pl.lock);
		return REAL(epoll_ctl)(epfd, op, fd, ev);
	}
	if (op != EPOLL_CTL_DEL) {
		lsn_open_ring(e);
		lsn_retry(e);
	}
	/* the ring fd is readable while work waits: the same events mean the same */
	target = e->mode == PL_RING ? e->ring->ring.ring_fd : fd;
	ret = REAL(epoll_ctl)(epfd, op, target, ev);
	err = errno;
	if (!ret && e->handoff >= 0)
		REAL(epoll_ctl)(epfd, op, e->handoff, ev);
	if (!ret && op == EPOLL_CTL_DEL)
		spw_pl_regs_del(&e->regs, epfd);
	else if (!ret && ev && spw_pl_regs_set(&e->regs, epfd, ev))
		say_once(SAY_REGS, "listener fd %d is in more than %d epoll sets: only %d follow "
			 "its ring", fd, SPW_PL_MAX_REGS, SPW_PL_MAX_REGS);
	pthread_mutex_unlock(&pl.lock);
	errno = err;
	return ret;
}

/*
 * poll()/ppoll(): a copy of the set with each consumed member's ring fd
 * in place of its listener; the results are copied back.
 */
static struct pollfd *poll_subst(struct pollfd *fds, nfds_t n, struct pollfd *stack, nfds_t nstack)
{
	struct pollfd *sub = NULL;
	nfds_t i;

	for (i = 0; i < n; i++)
		if (tracked(fds[i].fd))
			break;
	if (i == n)
		return NULL;
	sub = n <= nstack ? stack : malloc(n * sizeof(*sub));
	if (!sub)
		return NULL;	/* passed through: the listener still works */
	memcpy(sub, fds, n * sizeof(*sub));
	pthread_mutex_lock(&pl.lock);
	for (; i < n; i++) {
		struct pl_lsn *e = lsn_get(fds[i].fd);

		if (!e || !e->member)
			continue;
		lsn_open_ring(e);
		lsn_retry(e);
		if (e->mode == PL_RING)
			sub[i].fd = e->ring->ring.ring_fd;
	}
	pthread_mutex_unlock(&pl.lock);
	return sub;
}

static void poll_back(struct pollfd *fds, nfds_t n, struct pollfd *sub, struct pollfd *stack)
{
	nfds_t i;

	for (i = 0; i < n; i++)
		fds[i].revents = sub[i].revents;
	if (sub != stack)
		free(sub);
}

PL_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	struct pollfd stack[16], *sub;
	int ret, err;

	if (spw_pl_fdmap_empty(&pl.map) || !(sub = poll_subst(fds, n, stack, 16)))
		return REAL(poll)(fds, n, timeout);
	ret = REAL(poll)(sub, n, timeout);
	err = errno;
	poll_back(fds, n, sub, stack);
	errno = err;
	return ret;
}

PL_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
	struct pollfd stack[16], *sub;
	int ret, err;

	if (spw_pl_fdmap_empty(&pl.map) || !(sub = poll_subst(fds, n, stack, 16)))
		return REAL(ppoll)(fds, n, ts, mask);
	ret = REAL(ppoll)(sub, n, ts, mask);
	err = errno;
	poll_back(fds, n, sub, stack);
	errno = err;
	return ret;
}

/* _FORTIFY_SOURCE builds (Debian's nginx is one) call these instead. */
PL_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return poll(fds, n, timeout);
}

PL_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
			  const sigset_t *mask, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return ppoll(fds, n, ts, mask);
}

PL_EXPORT int close(int fd)
{
	struct pl_lsn *e;

	if (tracked(fd)) {
		pthread_mutex_lock(&pl.lock);
		e = lsn_get(fd);
		if (e)
			lsn_forget(e);
		pthread_mutex_unlock(&pl.lock);
	}
	return REAL(close)(fd);
}

/* @newfd now names another file: what we knew of it is void. */
static void forget_fd(int newfd)
{
	struct pl_lsn *e;

	if (!tracked(newfd))
		return;
	pthread_mutex_lock(&pl.lock);
	e = lsn_get(newfd);
	if (e)
		lsn_forget(e);
	pthread_mutex_unlock(&pl.lock);
}

PL_EXPORT int dup2(int oldfd, int newfd)
{
	int ret = REAL(dup2)(oldfd, newfd);

	if (ret >= 0 && oldfd != newfd) {
		int saved = errno;

		forget_fd(newfd);
		errno = saved;
	}
	return ret;
}

PL_EXPORT int dup3(int oldfd, int newfd, int flags)
{
	int ret = REAL(dup3)(oldfd, newfd, flags);

	if (ret >= 0) {
		int saved = errno;

		forget_fd(newfd);
		errno = saved;
	}
	return ret;
}

PL_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	struct pl_lsn *e, *next;
	int ret, saved;

	if (!REAL(close_range)) {
		errno = ENOSYS;
		return -1;
	}
	ret = real.close_range(first, last, flags);
	if (ret || (flags & CLOSE_RANGE_CLOEXEC) || spw_pl_fdmap_empty(&pl.map))
		return ret;
	saved = errno;
	pthread_mutex_lock(&pl.lock);
	for (e = pl.lsns; e; e = next) {
		next = e->next;
		if ((unsigned)e->fd >= first && (unsigned)e->fd <= last)
			lsn_forget(e);
	}
	pthread_mutex_unlock(&pl.lock);
	errno = saved;
	return ret;
}

/* ------------------------------------------------------------------ */
/* start-up                                                            */

static const char *env_get(const char *name)
{
	return getenv(name);
}

__attribute__((constructor)) static void pl_init(void)
{
	static const char *const keep[] = {
		"SPW_RING_ENTRIES", "SPW_POLICY", "SPW_STALL_MS", "SPW_PRELOAD_VERBOSE",
		"SPW_PRELOAD_HANDOFF_MS",
	};
	const char *v, *inherited;
	char err[256];
	Dl_info di;
	unsigned i;

	real_resolve();
	v = getenv("SPW_PRELOAD_VERBOSE");
	pl.verbose = v && *v && strcmp(v, "0");
	v = getenv("SPW_PRELOAD_HANDOFF_MS");
	pl.handoff_ms = v && *v ? strtoll(v, NULL, 10) : 2000;
	spw_pl_parse_params(env_get, &pl.params, err, sizeof(err));
	if (err[0])
		say_once(SAY_ENV, "%s: the module's default is used instead", err);
	for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
		v = getenv(keep[i]);
		if (v && asprintf(&pl.env_keep[pl.nr_env_keep], "%s=%s", keep[i], v) > 0)
			pl.nr_env_keep++;
	}
	if (access(SPW_DEVICE_PATH, R_OK | W_OK))
		pl.dev_errno = errno;
	if (dladdr((void *)pl_init, &di) && di.dli_fname && !realpath(di.dli_fname, pl.self))
		pl.self[0] = '\0';

	inherited = getenv(SPW_PL_ENV_GROUPS);
	if (inherited) {
		struct adopt_ctx ctx = { 0 };

		if (spw_pl_desc_parse(inherited, adopt_group, &ctx) < 0)
			say_once(SAY_INHERIT, "%s=\"%s\" is malformed: the rest is ignored",
				 SPW_PL_ENV_GROUPS, inherited);
		/* our children get it again from execve() if they need it */
		unsetenv(SPW_PL_ENV_GROUPS);
	}
	pthread_atfork(pl_prepare, pl_parent, pl_child);
}
