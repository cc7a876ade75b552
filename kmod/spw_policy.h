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
	const unsigned int *khead; /* consumer's head in shared memory: untrusted */
};

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

#define SPW_PICK_DROP	(-1)

/*
 * Choose the ring for a connection that arrived on member @origin:
 * @origin itself when it has room (O(1), the common case); otherwise the
 * live sibling with the least outstanding work, scanning from @start so
 * that ties rotate instead of always landing on the same sibling. An empty
 * sibling ends the scan at once. Returns the ring index, or SPW_PICK_DROP
 * when every live ring is full.
 */
int spw_pick_ring(const struct spw_ring_acct *rings, unsigned int nr,
		  unsigned int origin, unsigned int start);

#endif /* SPW_POLICY_H */
