/* SPDX-License-Identifier: MIT */
/*
 * spillway.h: the whole public API of libspillway.
 *
 * A master registers its listening sockets as one group
 * (spw_group_create); each worker opens the ring of its member
 * (spw_ring_open + spw_ring_init) and reaps accepted connections as CQEs.
 * The fast path (peek, seen, advance, for-each, ready) is inline and makes
 * no syscall; spw_wait_cqe*() enter the kernel once per batch.
 *
 * Every function returns 0 or a positive value on success and -errno on
 * failure; errno is never the only channel.
 *
 * One consumer per ring at a time: a CQE's fd is a number in the file
 * table of the process whose enter installed it. The kernel gives a ring's
 * CQEs to the table that enters (spw_enter() fails with -EBUSY while
 * another process has CQEs of it to consume) and discards what a process
 * left when it closes its last fd of the ring or exits; the fast path
 * below shows a process only the CQEs installed in its own table.
 */
#ifndef SPILLWAY_H
#define SPILLWAY_H

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <linux/io_uring.h>
#include <linux/time_types.h>
#include <linux/spillway.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Group creation parameters; zero-initialise, unused fields must be zero. */
struct spw_group_params {
	unsigned ring_entries;	/* CQEs per ring, power of two; 0: default */
	unsigned flags;		/* SPW_GROUP_F_* */
	unsigned stall_ms;	/* 0: default; SPW_STALL_OFF: spill on full only */
	unsigned policy;	/* SPW_POLICY_*; 0: the default (SPW_POLICY_P2C) */
	unsigned spill_at;	/* spill at this many waiting; 0: when full */
	unsigned resv[3];
};

/* A worker's view of one ring, set up by spw_ring_init(). */
struct spw_ring {
	int ring_fd;
	unsigned member;
	unsigned nr_members;
	unsigned ring_mask;
	unsigned ring_entries;
	unsigned accept_flags;	/* SPW_ACCEPT_* for the fds the kernel installs */
	unsigned *khead;	/* written by us, read by the kernel */
	const unsigned *ktail;	/* written by the kernel */
	const unsigned *kflags;
	const unsigned *kowner;	/* written by the kernel: whose CQEs they are */
	unsigned owner;		/* our id as the CQ's owner, from our last enter */
	struct spw_ring_hdr *hdr;
	struct spw_cqe *cqes;
	void *map;
	size_t map_len;
};

/*
 * Out-of-line API (src/).
 */

/* Register @nr listening TCP sockets as one group; returns the group fd. */
int spw_group_create(const int *listen_fds, unsigned nr,
		     const struct spw_group_params *p);
/*
 * The simplest start: @nr TCP listeners bound to @addr with SO_REUSEPORT
 * (port 0: one port chosen for all), made with the caller's own socket(),
 * bind() and listen() (every permission, security-module and fd-limit
 * check applies), registered as one group that owns them
 * (SPW_GROUP_F_SHARE_LISTENERS). Returns the group fd; fork workers, and
 * each opens its member's ring. @backlog is as for listen(). All or
 * nothing: no listener listens before every one is bound, so a failure
 * disturbs no client of the port.
 */
int spw_group_listen(const struct sockaddr *addr, socklen_t addrlen,
		     unsigned nr, int backlog, const struct spw_group_params *p);
/*
 * A new fd for member @member's listener (getsockname(), options,
 * accept()), from a group that owns its listeners, for a caller that
 * could have registered it (-EPERM otherwise).
 */
int spw_member_listener(int group_fd, unsigned member);
/* Open the ring of member @member (index into the create list). */
int spw_ring_open(int group_fd, unsigned member);
/* Map @ring_fd into @ring; @ring takes ownership of @ring_fd. */
int spw_ring_init(struct spw_ring *ring, int ring_fd);
/* Unmap and close; CQEs not yet consumed keep their fds open. */
void spw_ring_exit(struct spw_ring *ring);
/*
 * Flags of the new fds: SPW_ACCEPT_NONBLOCK | SPW_ACCEPT_CLOEXEC, or
 * accept4()'s SOCK_NONBLOCK | SOCK_CLOEXEC. Default: close-on-exec.
 */
void spw_ring_set_accept_flags(struct spw_ring *ring, unsigned flags);

/*
 * Hand over every pending connection, then wait for @wait_nr CQEs in the
 * ring for at most @ts (NULL: forever). Returns the number ready; -ETIME
 * when @ts passed with none, -EINTR when a signal came during a wait with
 * @ts, -EBUSY when another process has CQEs of this ring to consume, and
 * -EMFILE, -ENFILE or -ENOMEM when this one cannot take a connection now
 * (those waiting for it then go to siblings that can).
 */
int spw_enter(struct spw_ring *ring, unsigned wait_nr,
	      const struct __kernel_timespec *ts);
/*
 * Like spw_enter(), handing over at most @max connections (0: all that
 * fit); returns once it has handed over @max, even with fewer than
 * @wait_nr CQEs ready. Connections handed over are fds of this process
 * and die with it; those still waiting in the kernel move on to a sibling
 * when this consumer dies or stalls. A server whose workers may be killed
 * takes one per accept(): spw_enter_max(ring, 1, 1, NULL).
 */
int spw_enter_max(struct spw_ring *ring, unsigned max, unsigned wait_nr,
		  const struct __kernel_timespec *ts);
int spw_wait_cqes(struct spw_ring *ring, struct spw_cqe **cqe_ptr,
		  unsigned wait_nr, const struct __kernel_timespec *ts);

/* Counters: fills @out[0..nr) and returns the number of members. */
int spw_group_stats(int group_fd, struct spw_member_stats *out, unsigned nr);
/* Counters with the group totals (struct spw_group_stats.total). */
int spw_group_stats_full(int group_fd, struct spw_group_stats *st,
			 struct spw_member_stats *out, unsigned nr);

/* Convert a CQE address to a sockaddr (sockaddr_in or sockaddr_in6). */
int spw_addr_to_sockaddr(const struct spw_addr *a, struct sockaddr *sa,
			 unsigned *len);
/*
 * The address the client of @cqe asked for, and the address of the member
 * whose ring serves it; they differ when a connection spilled between
 * members bound to different addresses. @len is in/out as for accept():
 * the full length is stored, and the address is truncated to the buffer.
 * The first is the fd's local address (one getsockname(): a CQE does not
 * carry it), the second is read from @ring's header (no system call).
 * Both return 0 or -errno.
 */
int spw_cqe_requested_addr(const struct spw_ring *ring, const struct spw_cqe *cqe,
			   struct sockaddr *sa, socklen_t *len);
int spw_cqe_served_addr(const struct spw_ring *ring, const struct spw_cqe *cqe,
			struct sockaddr *sa, socklen_t *len);

/*
 * Inline fast path.
 */

/* Pairs with the kernel's smp_store_release of the tail. */
#define spw_smp_load_acquire(p)		__atomic_load_n((p), __ATOMIC_ACQUIRE)
/* Pairs with the kernel's READ_ONCE of the head. */
#define spw_smp_store_release(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)

/*
 * The CQEs posted to us and not consumed: [*@head, returned tail). They
 * are ours when the ring's owner is us both before we read the head and
 * after we read the tail: the kernel stores a new owner (release) after
 * resetting the head and before the tail that publishes the new owner's
 * CQEs. Otherwise there are none for us.
 */
static inline unsigned __spw_cq_snap(const struct spw_ring *ring, unsigned *head)
{
	unsigned tail;

	/* pairs with the kernel's release of the owner */
	if (__atomic_load_n(ring->kowner, __ATOMIC_ACQUIRE) != ring->owner) {
		*head = *ring->khead;
		return *head;
	}
	*head = *ring->khead;
	/* pairs with the kernel's release of the tail */
	tail = spw_smp_load_acquire(ring->ktail);
	if (__atomic_load_n(ring->kowner, __ATOMIC_ACQUIRE) != ring->owner)
		return *head;
	return tail;
}

/* Number of CQEs the kernel has posted to us and we have not consumed. */
static inline unsigned spw_cq_ready(const struct spw_ring *ring)
{
	unsigned head, tail = __spw_cq_snap(ring, &head);

	return tail - head;
}

/* Give @nr consumed CQEs back to the kernel. */
static inline void spw_cq_advance(struct spw_ring *ring, unsigned nr)
{
	if (nr)
		/* the kernel reads head once per decision */
		spw_smp_store_release(ring->khead, *ring->khead + nr);
}

/* Mark one CQE from spw_peek_cqe()/spw_wait_cqe() as consumed. */
static inline void spw_cqe_seen(struct spw_ring *ring, struct spw_cqe *cqe)
{
	if (cqe)
		spw_cq_advance(ring, 1);
}

/* Oldest unconsumed CQE without a syscall; -EAGAIN when there is none. */
static inline int spw_peek_cqe(struct spw_ring *ring, struct spw_cqe **cqe_ptr)
{
	unsigned head, tail = __spw_cq_snap(ring, &head);

	if (tail == head) {
		*cqe_ptr = NULL;
		return -EAGAIN;
	}
	*cqe_ptr = &ring->cqes[head & ring->ring_mask];
	return 0;
}

/* Wait for one CQE (peek first: no syscall when one is there). */
static inline int spw_wait_cqe(struct spw_ring *ring, struct spw_cqe **cqe_ptr)
{
	if (!spw_peek_cqe(ring, cqe_ptr))
		return 0;
	return spw_wait_cqes(ring, cqe_ptr, 1, NULL);
}

/* Like spw_wait_cqe(), giving up after @ts with -ETIME. */
static inline int spw_wait_cqe_timeout(struct spw_ring *ring,
				       struct spw_cqe **cqe_ptr,
				       struct __kernel_timespec *ts)
{
	if (!spw_peek_cqe(ring, cqe_ptr))
		return 0;
	return spw_wait_cqes(ring, cqe_ptr, 1, ts);
}

/*
 * Walk the CQEs ready when the walk starts without consuming them; follow
 * with spw_cq_advance(ring, count). @head must be a plain variable.
 */
#define spw_for_each_cqe(ring, head, cqe)					\
	for (unsigned __spw_tail_##head = __spw_cq_snap((ring), &(head));	\
	     (cqe = ((head) != __spw_tail_##head ?				\
		     &(ring)->cqes[(head) & (ring)->ring_mask] : NULL));	\
	     (head)++)

/*
 * io_uring (liburing's io_uring_prep_* style): make @sqe take one
 * connection of the ring @ring_fd (spw_ring_open(); no spw_ring_init()
 * needed). Its completion's res is the connection's fd, installed in the
 * submitter's file table, or -errno; with @cqe not NULL the kernel also
 * fills *@cqe (peer, origin, member, flags) before the completion is
 * posted. Several in flight take several connections. @accept_flags:
 * SPW_ACCEPT_*. A command with nothing to take waits in the kernel until
 * a connection comes; spw_prep_cancel(), or the io_uring's exit,
 * completes it with -ECANCELED. The kernel's contract is
 * SPW_URING_ACCEPT in <linux/spillway.h>.
 */
static inline void spw_prep_accept(struct io_uring_sqe *sqe, int ring_fd,
				   struct spw_cqe *cqe, unsigned accept_flags)
{
	struct spw_uring_accept *a = (struct spw_uring_accept *)sqe->cmd;

	/* every field, as liburing's io_uring_prep_rw() does; not user_data */
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->flags = 0;
	sqe->ioprio = 0;
	sqe->fd = ring_fd;
	sqe->off = 0;
	sqe->cmd_op = SPW_URING_ACCEPT;
	sqe->addr = 0;
	sqe->len = 0;
	sqe->uring_cmd_flags = 0;
	sqe->buf_index = 0;
	sqe->personality = 0;
	sqe->file_index = 0;
	a->cqe_addr = (unsigned long)cqe;
	a->accept_flags = accept_flags;
	a->resv = 0;
}

/*
 * io_uring: make @sqe end every spw_prep_accept() command waiting on
 * @ring_fd (they complete with -ECANCELED; this one with 0), e.g. before
 * a worker stops taking connections. SPW_URING_CANCEL in
 * <linux/spillway.h> says where IORING_OP_ASYNC_CANCEL does not reach.
 */
static inline void spw_prep_cancel(struct io_uring_sqe *sqe, int ring_fd)
{
	spw_prep_accept(sqe, ring_fd, NULL, 0);
	sqe->cmd_op = SPW_URING_CANCEL;
}

#ifdef __cplusplus
}
#endif

#endif /* SPILLWAY_H */
