/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * spw_policy.h - which ring takes a new connection.
 *
 * This file and spw_policy.c are compiled twice: into the module and into
 * the host unit tests and benchmarks. They include no kernel header and use
 * only plain C, so the decision can be tested and measured without a
 * kernel. The caller serialises every call on one group (the module holds
 * the group lock); only @khead may change underneath, written by user space.
 */
#ifndef SPW_POLICY_H
#define SPW_POLICY_H

/*
 * Accounting of one ring, as the policy sees it. The module keeps these in
 * one array per group so a scan over siblings walks contiguous memory.
 */
struct spw_ring_acct {
	unsigned int entries;	/* CQ slots, a power of two */
	unsigned int pending;	/* assigned, not yet posted as a CQE */
	unsigned int ktail;	/* kernel's own tail; never read back from user memory */
	unsigned int live;	/* 0: consumer gone, never a target */
	unsigned int waiting;	/* consumers asleep in enter, waiting for work */
	unsigned int last_active; /* clock (jiffies) of the consumer's last enter */
	const unsigned int *khead; /* consumer's head in shared memory: untrusted */
};

/*
 * Time as the policy sees it: @now on the same clock as last_active, and
 * @stall, how long a consumer may stay away from enter before its ring
 * counts as stalled (SPW_STALL_NEVER: never).
 */
struct spw_clock {
	unsigned int now;
	unsigned int stall;
};

#define SPW_STALL_NEVER	(~0U)

/* Read a value user space may change at any time, exactly once. */
#define SPW_READ_USER_ONCE(x)	(*(const volatile unsigned int *)&(x))

/*
 * CQEs posted and not yet consumed. @ktail - head is at most @entries for
 * an honest consumer; anything larger (head beyond tail, or far behind)
 * is garbage and counts as a full ring, never as room.
 */
static inline unsigned int spw_ring_posted(const struct spw_ring_acct *r)
{
	unsigned int used = r->ktail - SPW_READ_USER_ONCE(*r->khead);

	return used > r->entries ? r->entries : used;
}

/* The ring's outstanding work: pending + posted, at most @entries. */
static inline unsigned int spw_ring_outstanding(const struct spw_ring_acct *r)
{
	unsigned int out = r->pending + spw_ring_posted(r);

	return out > r->entries ? r->entries : out;
}

static inline int spw_ring_has_room(const struct spw_ring_acct *r)
{
	return r->live && spw_ring_outstanding(r) < r->entries;
}

/*
 * A consumer is responsive while it sleeps in enter or has entered within
 * the stall time. A stopped or stuck worker stops entering, so new work
 * avoids its ring and idle siblings take what waits there.
 */
static inline int spw_ring_responsive(const struct spw_ring_acct *r,
				      const struct spw_clock *c)
{
	return c->stall == SPW_STALL_NEVER || r->waiting ||
	       c->now - r->last_active < c->stall;
}

#define SPW_PICK_DROP	(-1)

/*
 * Choose the ring for a connection that arrived on member @origin:
 * @origin itself when it has room and its consumer is responsive (O(1),
 * the common case); otherwise the responsive live sibling with the least
 * outstanding work, scanning from @start so that ties rotate instead of
 * always landing on the same sibling (an empty one ends the scan); then
 * @origin if it has room at all; then the least-full live sibling.
 * Returns the ring index, or SPW_PICK_DROP when every live ring is full.
 * With stall == SPW_STALL_NEVER this is plain "origin, else least-full".
 */
int spw_pick_ring(const struct spw_ring_acct *rings, unsigned int nr,
		  unsigned int origin, unsigned int start,
		  const struct spw_clock *clock);

/*
 * The stalled ring an idle consumer should take work from: the live or
 * closed sibling of @self with the most pending tokens whose consumer is
 * not responsive, or -1.
 */
int spw_pick_victim(const struct spw_ring_acct *rings, unsigned int nr,
		    unsigned int self, const struct spw_clock *clock);

#endif /* SPW_POLICY_H */
