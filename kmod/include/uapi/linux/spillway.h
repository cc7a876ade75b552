/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR MIT */
/*
 * spillway: accept groups with per-worker accept completion rings.
 *
 * This header is the whole contract between the kernel module and user
 * space. The library (liburing-ext) includes it and redefines nothing.
 *
 * Objects:
 *   /dev/spillway      control device: SPW_IOC_GROUP_CREATE -> group fd
 *   group fd           SPW_IOC_RING_OPEN -> ring fd, SPW_IOC_GROUP_STATS,
 *                      SPW_IOC_MEMBER_LISTENER -> a member's listener fd
 *   ring fd            mmap() the ring, SPW_IOC_ENTER, poll(),
 *                      io_uring's IORING_OP_URING_CMD SPW_URING_ACCEPT
 *
 * One consumer at a time (struct spw_enter.owner): a CQE's fd is a number
 * in the file table of the process whose enter installed it, so a ring's
 * unconsumed CQEs belong to that table, the ring's owner. An enter from
 * another table fails with -EBUSY while the owner has unconsumed CQEs.
 * When the owner closes its last fd of the ring (close, exit, exec with
 * close-on-exec), what it left unconsumed is discarded (the kernel moves
 * @head to @tail: those fds are the departing table's), and the next
 * enter, from any table, claims the ring.
 *
 * Barrier contract (see struct spw_ring_hdr):
 *   The kernel writes CQEs, then publishes them with one store-release of
 *   @tail. The consumer load-acquires @tail, reads CQEs, then gives slots
 *   back with one store-release of @head. The kernel reads @head once per
 *   decision (READ_ONCE) and never trusts it beyond "how many slots are in
 *   use", clamped to @ring_entries; it never indexes memory with it.
 */
#ifndef _UAPI_LINUX_SPILLWAY_H
#define _UAPI_LINUX_SPILLWAY_H

#include <linux/const.h>
#include <linux/ioctl.h>
#include <linux/types.h>

#define SPW_DEVICE_PATH		"/dev/spillway"
#define SPW_ABI_VERSION		5

#define SPW_MAX_MEMBERS		1024
#define SPW_MAX_RING_ENTRIES	32768
#define SPW_DEFAULT_RING_ENTRIES 64

/* struct spw_group_create.flags */
#define SPW_GROUP_F_CLOEXEC	_BITUL(0)	/* group fd gets FD_CLOEXEC */
/*
 * The group owns its listeners: the creator closes its own fds of them,
 * and SPW_IOC_MEMBER_LISTENER hands one out to a holder of the group fd
 * that could have registered it (its owner, or CAP_NET_ADMIN). Without
 * it, SPW_IOC_MEMBER_LISTENER fails with -EOPNOTSUPP: the creator
 * already holds the listeners, and nobody else needs them.
 */
#define SPW_GROUP_F_SHARE_LISTENERS _BITUL(1)
#define SPW_GROUP_F_ALL		(SPW_GROUP_F_CLOEXEC | SPW_GROUP_F_SHARE_LISTENERS)

/*
 * SPW_IOC_GROUP_CREATE on /dev/spillway. Registers every socket of the
 * list as one group (all or nothing) and returns the group fd.
 */
struct spw_group_create {
	__u64	fds;		/* user pointer to __s32[nr_fds]: listening TCP sockets */
	__u32	nr_fds;		/* 1 .. SPW_MAX_MEMBERS */
	__u32	ring_entries;	/* CQEs per ring: power of two, 1 .. SPW_MAX_RING_ENTRIES */
	__u32	flags;		/* SPW_GROUP_F_* */
	/*
	 * A ring whose consumer has not entered for @stall_ms while work
	 * waits for it counts as stalled: new connections go to responsive
	 * siblings and idle siblings take the connections waiting there.
	 * 0: SPW_DEFAULT_STALL_MS; SPW_STALL_OFF: spill only on a full ring.
	 */
	__u32	stall_ms;
	__u32	policy;		/* SPW_POLICY_*; 0: SPW_POLICY_DEFAULT */
	/*
	 * Spill when the ring the policy prefers holds at least this many
	 * connections (pending + posted, unconsumed), even though it has
	 * room. 0 or @ring_entries: only when it is full; more than
	 * @ring_entries is -EINVAL.
	 */
	__u32	spill_at;
	__u32	resv[2];	/* must be zero */
};

#define SPW_DEFAULT_STALL_MS	20
#define SPW_STALL_OFF		0xffffffffU

/*
 * struct spw_group_create.policy: which ring takes a connection that
 * arrived on member L. Every policy skips rings that are full, closed or
 * stalled while another ring can take the connection, and resets it only
 * when every ring is full. docs/architecture.md compares them.
 */
#define SPW_POLICY_DEFAULT	0	/* the module's choice: SPW_POLICY_P2C */
#define SPW_POLICY_ORIGIN	1	/* L's ring; else the least loaded */
#define SPW_POLICY_LEAST	2	/* the least loaded ring; L's on ties */
#define SPW_POLICY_P2C		3	/* L's ring against the less loaded of two random */
#define SPW_POLICY_CPU		4	/* the ring whose consumer last ran on this CPU */
#define SPW_POLICY_MAX		SPW_POLICY_CPU

/*
 * SPW_IOC_MEMBER_LISTENER on a group fd: a new fd for a member's listener,
 * in a group created with SPW_GROUP_F_SHARE_LISTENERS, for a caller that
 * could have registered it (-EPERM otherwise).
 */
struct spw_member_listener {
	__u32	member;
	__u32	flags;		/* SPW_RING_OPEN_F_CLOEXEC */
};

/* struct spw_ring_open.flags */
#define SPW_RING_OPEN_F_CLOEXEC	_BITUL(0)
#define SPW_RING_OPEN_F_ALL	(SPW_RING_OPEN_F_CLOEXEC)

/*
 * SPW_IOC_RING_OPEN on a group fd: a ring fd for member @member. The ring
 * is sized (in bytes) @ring_bytes on return: mmap that many bytes at
 * offset 0, PROT_READ | PROT_WRITE, MAP_SHARED.
 */
struct spw_ring_open {
	__u32	member;		/* index in the create list */
	__u32	flags;		/* SPW_RING_OPEN_F_* */
	__u32	ring_entries;	/* out */
	__u32	nr_members;	/* out */
	__u64	ring_bytes;	/* out: mmap length */
	__u32	cqes_offset;	/* out: byte offset of the CQE array */
	__u32	cqe_size;	/* out: sizeof(struct spw_cqe), the array's stride */
	__u32	resv[2];	/* must be zero */
};

/* struct spw_enter.flags */
#define SPW_ENTER_F_TIMEOUT	_BITUL(0)	/* @timeout_ns is valid */
#define SPW_ENTER_F_ALL		(SPW_ENTER_F_TIMEOUT)

/*
 * struct spw_enter.accept_flags: what accept4()'s SOCK_NONBLOCK and
 * SOCK_CLOEXEC ask for the new sockets. Bits of their own: the O_* values
 * differ between architectures.
 */
#define SPW_ACCEPT_NONBLOCK	_BITUL(0)
#define SPW_ACCEPT_CLOEXEC	_BITUL(1)
#define SPW_ACCEPT_ALL		(SPW_ACCEPT_NONBLOCK | SPW_ACCEPT_CLOEXEC)

/*
 * SPW_IOC_ENTER on a ring fd: install the connections pending for this
 * ring as fds in the caller's file table and post one CQE each (all that
 * fit, or at most @max_post in this call), then wait until at least
 * @min_complete CQEs are in the ring (or the timeout expires, or a signal
 * arrives). Returns the number of CQEs in the ring. A timeout with no CQE
 * returns -ETIME; a signal during a wait with a timeout returns -EINTR
 * (as epoll_wait() does: a restart could not keep the deadline), one
 * during a wait without a timeout restarts under SA_RESTART. Once it has
 * posted @max_post, the call returns without waiting further, even with
 * fewer than @min_complete CQEs in the ring.
 *
 * The caller's file table becomes the ring's owner (see the top of this
 * file): -EBUSY while another table owns CQEs it has not consumed, and
 * -EMFILE, -ENFILE or -ENOMEM when this one cannot take a connection (the
 * connections waiting for it then move on to siblings that can).
 *
 * Connections still pending when a consumer dies or stalls move on to a
 * sibling; connections already posted are fds of the consumer and die with
 * it. A consumer that may be killed (a server's worker) keeps that number
 * small with @max_post (1: one per accept()).
 */
struct spw_enter {
	__u32	min_complete;	/* 0: do not wait */
	__u32	flags;		/* SPW_ENTER_F_* */
	__u32	accept_flags;	/* SPW_ACCEPT_* */
	__u32	max_post;	/* 0: as many as the ring has room for */
	__s64	timeout_ns;	/* relative, with SPW_ENTER_F_TIMEOUT */
	/*
	 * in: the owner id the caller holds (0: none); out: the id of the
	 * caller's file table as the ring's owner, written when it differs.
	 * A consumer reads CQEs only while spw_ring_hdr.owner equals it.
	 */
	__u32	owner;
	__u32	resv;		/* must be zero */
};

/* Per-member counters, all monotonic except @outstanding / @pending. */
struct spw_member_stats {
	__u64	arrived;	/* connections that arrived on this member */
	__u64	delivered;	/* CQEs posted to this member's ring */
	__u64	spilled_out;	/* arrived here, delivered by a sibling's ring */
	__u64	spilled_in;	/* arrived at a sibling, delivered by this ring */
	__u64	dropped;	/* arrived here while every ring was full: reset */
	__u64	rehomed;	/* waited here, moved on: ring closed, stalled or corrupt */
	__u32	outstanding;	/* pending + posted-but-unconsumed, now */
	__u32	pending;	/* assigned, not yet handed to the consumer */
	__u32	ring_entries;
	__u32	state;		/* SPW_MEMBER_* */
};

#define SPW_MEMBER_NEW		0	/* ring never opened: still takes work */
#define SPW_MEMBER_OPEN		1	/* a consumer holds the ring */
#define SPW_MEMBER_CLOSED	2	/* consumer gone: never a target */
/* consumer gone, no sibling open: still takes work, for a replacement */
#define SPW_MEMBER_VACANT	3

/*
 * SPW_IOC_GROUP_STATS on a group fd or a ring fd. Fills @total and up to
 * @nr entries of @members; returns the number of members of the group.
 */
struct spw_group_stats {
	__u64	members;	/* user pointer to struct spw_member_stats[nr] */
	__u32	nr;
	__u32	resv;		/* must be zero */
	struct spw_member_stats total;	/* out: sums over members */
	__u64	stale;		/* out: tokens whose accept found nothing */
	/*
	 * out: drops decided, not yet carried out. While the group lives,
	 * total.arrived == total.delivered + total.dropped + stale +
	 * total.pending + dropping (docs/operations.md).
	 */
	__u64	dropping;
	__u64	resv2[2];	/* out: written as zero */
};

/* struct spw_addr: an IPv4 or IPv6 socket address. */
struct spw_addr {
	__u32	family;		/* AF_INET or AF_INET6 */
	__u32	port;		/* host byte order */
	__u32	addr[4];	/* network byte order; IPv4 uses addr[0] */
	__u32	scope_id;	/* IPv6 only */
	__u32	resv;
};

/*
 * The shared ring: mmap offset 0 of a ring fd. The header and the CQE
 * array never share a cache line, nor do the fields the consumer writes
 * and those the kernel writes.
 */
struct spw_ring_hdr {
	/* Written by the consumer (store-release), read by the kernel. */
	__u32	head;
	__u32	resv0[15];

	/* Written by the kernel (store-release), read by the consumer. */
	__u32	tail;
	/* Written once by the kernel at open; the consumer only reads. */
	__u32	ring_mask;
	__u32	ring_entries;
	__u32	member;
	__u32	nr_members;
	/* Written by the kernel (atomic bit operations); SPW_RING_F_*. */
	__u32	flags;
	/* Written once by the kernel at open: byte offset of the CQE array. */
	__u32	cqes_offset;
	/*
	 * Written by the kernel: the id of the file table that owns the
	 * CQEs (struct spw_enter.owner), 0 when none does. Stored before
	 * the @tail that publishes the owner's first CQE: a consumer that
	 * load-acquires @tail and then reads its own id here may read the
	 * CQEs up to that @tail.
	 */
	__u32	owner;
	/*
	 * Written once by the kernel at open: the address of the member
	 * this ring serves (its listener's bound address), which every CQE
	 * of the ring is served "as" (spw_cqe_served_addr()).
	 */
	struct spw_addr served;

	/*
	 * Written by the kernel, for cheap observation; the authoritative
	 * counters come from SPW_IOC_GROUP_STATS.
	 */
	__u64	delivered;
	__u64	spilled_in;
	__u64	spilled_out;
	__u64	dropped;
	__u64	resv2[4];
};

/* struct spw_ring_hdr.flags */
#define SPW_RING_F_WORK_PENDING	_BITUL(0)	/* connections wait for an enter */
#define SPW_RING_F_DROPPED	_BITUL(1)	/* a connection of this member was reset */

/* struct spw_cqe.flags */
/* arrived on @origin, whose ring was full or stalled */
#define SPW_CQE_F_SPILLED	_BITUL(0)

/*
 * One completion: one cache line (64 bytes). What a server needs for
 * every connection is here; the addresses of the local end are not (ABI
 * 4 carried them, 112 bytes): the address the client asked for is the
 * fd's own (getsockname(), spw_cqe_requested_addr(), only when asked),
 * and the address the ring's member serves is in the ring header
 * (spw_ring_hdr.served), the same for every CQE of the ring.
 */
struct spw_cqe {
	__s32	fd;		/* connected socket, installed in the caller's table */
	__u32	flags;		/* SPW_CQE_F_* */
	__u32	origin;		/* member the connection arrived on */
	__u32	member;		/* member whose ring this is */
	struct spw_addr peer;	/* the client */
	__u64	resv[2];	/* written as zero */
};

/*
 * io_uring: an IORING_OP_URING_CMD SQE on a ring fd with @cmd_op
 * SPW_URING_ACCEPT and a struct spw_uring_accept in its command area
 * (sqe->cmd, 16 bytes: a 64-byte SQE will do) takes one connection of
 * the ring, as accept4() would take one of a listener, and completes in
 * the submitter's own io_uring CQ: cqe->res is the new fd, installed in
 * the submitter's file table, or -errno. It does not use the ring's CQ
 * (no mmap, no owner, no enter), so one io_uring_enter() both takes
 * connections and does their I/O. Several in flight take several
 * connections; each completes with one.
 *
 * A connection waiting for the ring (or, once the stall timer has seen
 * one, behind a stalled sibling) completes it at once. Otherwise it waits
 * in the kernel until one arrives (from 6.7 without a thread; before, in
 * an io_uring worker thread) and counts as an idle consumer for
 * placement, as an enter's wait does.
 *
 * Errors: -EINVAL (unknown @accept_flags bit, @resv not zero), -EFAULT
 * (@cqe_addr not a user address), -EMFILE, -ENFILE, -ENOMEM (as an enter:
 * the connections waiting for this ring then move on to siblings),
 * -ECANCELED (SPW_URING_CANCEL, or the io_uring or its task going away,
 * while it waited: no connection was taken), -ENOTTY (another @cmd_op).
 * io_uring itself refuses IORING_SETUP_IOPOLL rings (-EOPNOTSUPP).
 */
#define SPW_URING_ACCEPT	_IOWR(SPW_IOC_MAGIC, 8, struct spw_uring_accept)
/*
 * @cmd_op SPW_URING_CANCEL (the command area all zero): every
 * SPW_URING_ACCEPT waiting on this ring fd, from any io_uring, completes
 * with -ECANCELED; this one completes with 0. On kernels before 6.7
 * IORING_OP_ASYNC_CANCEL cancels a waiting command too; from 6.7 on it
 * does not (the command waits without a thread, where io_uring's cancel
 * does not look), and this is the way. A command still on its way to its
 * io_uring worker thread (before 6.7) may miss it.
 */
#define SPW_URING_CANCEL	_IO(SPW_IOC_MAGIC, 9)

struct spw_uring_accept {
	/*
	 * 0, or where to write the connection's struct spw_cqe (its fd is
	 * cqe->res too). Written after the fd is installed: a fault there
	 * still completes with the fd, which is the caller's.
	 */
	__u64	cqe_addr;
	__u32	accept_flags;	/* SPW_ACCEPT_* */
	__u32	resv;		/* must be zero */
};

/*
 * 0xBA: free in Documentation/userspace-api/ioctl/ioctl-number.rst of
 * 6.1 and 6.12 (ABI 3 used 0xB7, which is nsfs's NSIO). Number 5 was
 * SPW_IOC_GROUP_LISTEN, retired in ABI 4: spw_group_listen() makes the
 * listeners in user space, where every bind/listen check runs. Number 2
 * was ABI 4's RING_OPEN, whose rings held 112-byte CQEs: a library built
 * for them gets -ENOTTY from ABI 5's module rather than misreading its
 * 64-byte CQEs. Numbers 8 and 9 are SPW_URING_ACCEPT's and
 * SPW_URING_CANCEL's, io_uring commands, not ioctls: a ring fd's ioctl()
 * returns -ENOTTY for them.
 */
#define SPW_IOC_MAGIC		0xBA
#define SPW_IOC_GROUP_CREATE	_IOWR(SPW_IOC_MAGIC, 1, struct spw_group_create)
#define SPW_IOC_RING_OPEN	_IOWR(SPW_IOC_MAGIC, 7, struct spw_ring_open)
#define SPW_IOC_ENTER		_IOWR(SPW_IOC_MAGIC, 3, struct spw_enter)
#define SPW_IOC_GROUP_STATS	_IOWR(SPW_IOC_MAGIC, 4, struct spw_group_stats)
#define SPW_IOC_MEMBER_LISTENER	_IOW(SPW_IOC_MAGIC, 6, struct spw_member_listener)

#endif /* _UAPI_LINUX_SPILLWAY_H */
