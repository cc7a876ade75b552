/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR MIT */
/*
 * spillway: accept groups with per-worker accept completion rings.
 *
 * This header is the whole contract between the kernel module and user
 * space. The library (liburing-ext) includes it and redefines nothing.
 *
 * Objects:
 *   /dev/spillway      control device: SPW_IOC_GROUP_CREATE (listeners the
 *                      caller made) or SPW_IOC_GROUP_LISTEN (listeners the
 *                      module makes) -> group fd
 *   group fd           SPW_IOC_RING_OPEN -> ring fd, SPW_IOC_GROUP_STATS,
 *                      SPW_IOC_MEMBER_LISTENER -> a member's listener fd
 *   ring fd            mmap() the ring, SPW_IOC_ENTER, poll()
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

#include <linux/types.h>
#include <linux/ioctl.h>

#define SPW_DEVICE_PATH		"/dev/spillway"
#define SPW_ABI_VERSION		3

#define SPW_MAX_MEMBERS		1024
#define SPW_MAX_RING_ENTRIES	32768
#define SPW_DEFAULT_RING_ENTRIES 64

/* struct spw_group_create.flags */
#define SPW_GROUP_F_CLOEXEC	(1U << 0)	/* group fd gets FD_CLOEXEC */
#define SPW_GROUP_F_ALL		(SPW_GROUP_F_CLOEXEC)

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
	 * room. 0 or >= ring_entries: only when it is full.
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
 * SPW_IOC_GROUP_LISTEN on /dev/spillway: the module makes @nr TCP
 * listening sockets bound to @addr with SO_REUSEPORT (port 0: one port
 * chosen for all), in the caller's network namespace and as the caller,
 * registers them as one group (all or nothing) and returns the group fd.
 * The listeners belong to the group; SPW_IOC_MEMBER_LISTENER hands out
 * an fd for one.
 */
struct spw_group_listen {
	__u64	addr;		/* user pointer to a sockaddr_in or sockaddr_in6 */
	__u32	addrlen;
	__u32	nr;		/* 1 .. SPW_MAX_MEMBERS */
	__s32	backlog;	/* as for listen(); capped at net.core.somaxconn */
	__u32	resv0;		/* must be zero */
	/* as in struct spw_group_create; @fds and @nr_fds must be zero */
	struct spw_group_create params;
};

/* SPW_IOC_MEMBER_LISTENER on a group fd: a new fd for a member's listener. */
struct spw_member_listener {
	__u32	member;
	__u32	flags;		/* SPW_RING_OPEN_F_CLOEXEC */
};

/* struct spw_ring_open.flags */
#define SPW_RING_OPEN_F_CLOEXEC	(1U << 0)
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
	__u32	resv[3];	/* must be zero */
};

/* struct spw_enter.flags */
#define SPW_ENTER_F_TIMEOUT	(1U << 0)	/* @timeout_ns is valid */
#define SPW_ENTER_F_ALL		(SPW_ENTER_F_TIMEOUT)

/* struct spw_enter.accept_flags: the accept4() flags of the new sockets */
#define SPW_ACCEPT_NONBLOCK	00004000	/* == SOCK_NONBLOCK == O_NONBLOCK */
#define SPW_ACCEPT_CLOEXEC	02000000	/* == SOCK_CLOEXEC == O_CLOEXEC */

/*
 * SPW_IOC_ENTER on a ring fd: install the connections pending for this
 * ring as fds in the caller's file table and post one CQE each (all that
 * fit, or at most @max_post in this call), then wait until at least
 * @min_complete CQEs are in the ring (or the timeout expires, or a signal
 * arrives). Returns the number of CQEs in the ring. A timeout with no CQE
 * returns -ETIME. Once it has posted @max_post, the call returns without
 * waiting further, even with fewer than @min_complete CQEs in the ring.
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
#define SPW_MEMBER_VACANT	3	/* consumer gone, no sibling open: still
					 * takes work, for a replacement */

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
	/* Written by the kernel; SPW_RING_F_*. */
	__u32	flags;
	/* Written once by the kernel at open: byte offset of the CQE array. */
	__u32	cqes_offset;
	__u32	resv1[9];

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
#define SPW_RING_F_WORK_PENDING	(1U << 0)	/* connections wait for an enter */
#define SPW_RING_F_DROPPED	(1U << 1)	/* a connection of this member was reset */

/* struct spw_addr: an IPv4 or IPv6 socket address. */
struct spw_addr {
	__u32	family;		/* AF_INET or AF_INET6 */
	__u32	port;		/* host byte order */
	__u32	addr[4];	/* network byte order; IPv4 uses addr[0] */
	__u32	scope_id;	/* IPv6 only */
	__u32	resv;
};

/* struct spw_cqe.flags */
#define SPW_CQE_F_SPILLED	(1U << 0)	/* arrived on @origin, whose ring was full or stalled */

struct spw_cqe {
	__s32	fd;		/* connected socket, installed in the caller's table */
	__u32	flags;		/* SPW_CQE_F_* */
	__u32	origin;		/* member the connection arrived on */
	__u32	member;		/* member whose ring this is */
	struct spw_addr peer;	/* the client */
	/*
	 * The address the client asked for: the local end of the connection,
	 * which is the origin member's address (or, for a member bound to a
	 * wildcard, the address the SYN was sent to).
	 */
	struct spw_addr local;
	/*
	 * The address of the member whose ring serves it (@member's bound
	 * address). It differs from @local when a connection spilled between
	 * members bound to different addresses: the server answers "as"
	 * @served, but TCP's 4-tuple cannot change, so the client still talks
	 * to @local (docs/architecture.md, "Different addresses").
	 */
	struct spw_addr served;
};

#define SPW_IOC_MAGIC		0xB7
#define SPW_IOC_GROUP_CREATE	_IOWR(SPW_IOC_MAGIC, 1, struct spw_group_create)
#define SPW_IOC_RING_OPEN	_IOWR(SPW_IOC_MAGIC, 2, struct spw_ring_open)
#define SPW_IOC_ENTER		_IOWR(SPW_IOC_MAGIC, 3, struct spw_enter)
#define SPW_IOC_GROUP_STATS	_IOWR(SPW_IOC_MAGIC, 4, struct spw_group_stats)
#define SPW_IOC_GROUP_LISTEN	_IOWR(SPW_IOC_MAGIC, 5, struct spw_group_listen)
#define SPW_IOC_MEMBER_LISTENER	_IOW(SPW_IOC_MAGIC, 6, struct spw_member_listener)

#endif /* _UAPI_LINUX_SPILLWAY_H */
