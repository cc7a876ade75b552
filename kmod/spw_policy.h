/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * spw_policy.h - which ring takes a new connection.
 *
 * This file and spw_policy.c are compiled twice: into the module and into
 * the host unit tests and benchmarks. They use only plain C and no kernel
 * header (but linux/compiler.h's READ_ONCE() in the module), so the
 * decision can be tested and measured without a kernel.
 *
 * Calls on one group may run concurrently (the module's arrival path takes
 * no group-wide lock): every field of struct spw_ring_acct may change
 * underneath a decision, and is read once with SPW_READ_ONCE(). A decision
 * is therefore approximate: the caller re-checks the ring it was given
 * under that ring's own lock before it puts work there, and looks again
 * (or treats the connection as a drop, which it re-checks exactly in
 * process context, spw_pick_exact()) when the ring cannot take it. The
 * summary below is updated with atomic bit operations; a race between two
 * re-filings of one ring can leave it filed in a stale level or in none
 * until its next re-filing, never corrupt the summary.
 */
#ifndef SPW_POLICY_H
#define SPW_POLICY_H

/*
 * Accounting of one ring, as the policy sees it. The module keeps these in
 * one array per group; each ring's fields are written under that ring's
 * lock (with WRITE_ONCE(): decisions read them without it).
 */
struct spw_ring_acct {
	unsigned int entries;	/* CQ slots, a power of two */
	unsigned int pending;	/* assigned, not yet posted as a CQE */
	unsigned int inflight;	/* of @pending: being handed over now, not stealable */
	unsigned int ktail;	/* kernel's own tail; never read back from user memory */
	unsigned int live;	/* 0: consumer gone, never a target */
	/*
	 * No consumer holds the ring (never opened, or vacant): it never
	 * counts as responsive, takes other members' work only when no ring
	 * with a consumer can, and keeps its own member's while it has room.
	 */
	unsigned int unattended;
	/*
	 * The consumer could not take a connection (out of fds or memory):
	 * no room until it enters again.
	 */
	unsigned int refusing;
	unsigned int waiting;	/* consumers asleep in enter, waiting for work */
	unsigned int polled;	/* the consumer waits in poll/epoll/io_uring poll */
	unsigned int last_active; /* clock (jiffies) of the consumer's last enter or poll */
	unsigned int work_since; /* clock when work last found this ring idle, or last_active */
	const unsigned int *khead; /* consumer's head in shared memory: untrusted */
};

/*
 * Time as the policy sees it: @now on the same clock as last_active, and
 * @stall, how long a consumer may stay away from enter before its ring
 * counts as stalled (SPW_STALL_NEVER: never).
 */
#define SPW_LONG_BITS	(8 * sizeof(unsigned long))

struct spw_clock {
	unsigned int now;
	unsigned int stall;
};

#define SPW_STALL_NEVER	(~0U)

/*
 * Read a value another CPU (or user space, for @khead) may change at any
 * time, exactly once; and the atomic bit operations of the summary.
 */
#ifdef __KERNEL__
#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/compiler.h>
#define SPW_READ_ONCE(x)	READ_ONCE(x)
#define SPW_WRITE_ONCE(x, v)	WRITE_ONCE(x, v)
#define spw_xchg(p, v)		xchg(p, v)
#define spw_set_bit(n, a)	set_bit(n, a)
#define spw_clear_bit(n, a)	clear_bit(n, a)
/* orders a bit set or cleared before the next load (spw_bm_add/del) */
#define spw_mb_after_atomic()	smp_mb__after_atomic()
#else
#define SPW_READ_ONCE(x)	__atomic_load_n(&(x), __ATOMIC_RELAXED)
#define SPW_WRITE_ONCE(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define spw_xchg(p, v)		__atomic_exchange_n(p, v, __ATOMIC_SEQ_CST)
static inline void spw_set_bit(unsigned int n, unsigned long *a)
{
	__atomic_fetch_or(&a[n / SPW_LONG_BITS], 1UL << (n % SPW_LONG_BITS),
			  __ATOMIC_SEQ_CST);
}

static inline void spw_clear_bit(unsigned int n, unsigned long *a)
{
	__atomic_fetch_and(&a[n / SPW_LONG_BITS], ~(1UL << (n % SPW_LONG_BITS)),
			   __ATOMIC_SEQ_CST);
}

static inline void spw_mb_after_atomic(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}
#endif
#define SPW_READ_USER_ONCE(x)	SPW_READ_ONCE(x)

/*
 * CQEs posted and not yet consumed. @ktail - head is at most @entries for
 * an honest consumer; anything larger (head beyond tail, or far behind)
 * is garbage and counts as a full ring, never as room.
 */
static inline unsigned int spw_ring_posted(const struct spw_ring_acct *r)
{
	const unsigned int *khead = SPW_READ_ONCE(r->khead);
	unsigned int used = SPW_READ_ONCE(r->ktail) - SPW_READ_USER_ONCE(*khead);

	return used > r->entries ? r->entries : used;
}

/* The ring's outstanding work: pending + posted, at most @entries. */
static inline unsigned int spw_ring_outstanding(const struct spw_ring_acct *r)
{
	unsigned int out = SPW_READ_ONCE(r->pending) + spw_ring_posted(r);

	return out > r->entries ? r->entries : out;
}

static inline int spw_ring_has_room(const struct spw_ring_acct *r)
{
	return SPW_READ_ONCE(r->live) && !SPW_READ_ONCE(r->refusing) &&
	       spw_ring_outstanding(r) < r->entries;
}

/*
 * A consumer is responsive while it sleeps in enter or has entered (or
 * polled) within the stall time. A consumer that waits in poll/epoll is
 * never "in enter", so for it the question is whether work waits on it:
 * with none, it is idle and responsive; with some, it is responsive until
 * that work has waited a stall time without the consumer coming back. A
 * stopped or stuck worker stops coming back, so new work avoids its ring
 * and idle siblings take what waits there. A ring nobody holds has no
 * consumer to be responsive, stall detection or not.
 */
static inline int spw_ring_responsive(const struct spw_ring_acct *r,
				      const struct spw_clock *c)
{
	if (SPW_READ_ONCE(r->unattended))
		return 0;
	if (c->stall == SPW_STALL_NEVER || SPW_READ_ONCE(r->waiting) ||
	    c->now - SPW_READ_ONCE(r->last_active) < c->stall)
		return 1;
	return SPW_READ_ONCE(r->polled) &&
	       (!spw_ring_outstanding(r) ||
		c->now - SPW_READ_ONCE(r->work_since) < c->stall);
}

/* The policies, numbered as SPW_POLICY_* in the uapi header (checked at build). */
#define SPW_KIND_ORIGIN	1
#define SPW_KIND_LEAST	2
#define SPW_KIND_P2C	3
#define SPW_KIND_CPU	4

/*
 * The summary: where each ring stands, so that a decision never scans the
 * group. Every live ring whose consumer is responsive and whose ring has
 * room is in one load level (outstanding 0..7 each its own level, then
 * one level per power of two: exact where queues are short, within a
 * factor of two beyond); a ring found stalled with room is set aside (a
 * last resort, as is a ring nobody holds); a full, closed or refusing ring
 * is in neither. The caller re-files a ring (spw_sum_refile) whenever its
 * pending count, tail or liveness changes, and when its consumer enters or
 * polls; a decision that finds a ring misfiled (its consumer consumed,
 * stalled or went, or a concurrent re-filing left a stale bit) re-files it
 * and looks again, at most SPW_SUM_TRIES times: a few bitmaps of nr bits,
 * at most SPW_MAX_MEMBERS / 64 words each, and @level_mask, whose bit L is
 * set while bitmap L may hold a ring (a superset: set after a ring is
 * filed, cleared and re-checked when a bitmap empties).
 */
#define SPW_SUM_EXACT	8		/* levels 0..7: outstanding itself */
#define SPW_SUM_LEVELS	20		/* then 8 + log2(out / 8), out < 32768 */
#define SPW_SUM_ASIDE	SPW_SUM_LEVELS	/* stalled, with room */
#define SPW_SUM_NONE	0xff		/* full or closed */
#define SPW_SUM_BITMAPS	(SPW_SUM_LEVELS + 1)
#define SPW_SUM_TRIES	8		/* candidates one lookup may re-file */

struct spw_policy {
	unsigned int kind;	/* SPW_KIND_* */
	unsigned int spill_at;	/* 1 .. entries: spill at this many outstanding */
	unsigned int nr;
	unsigned int words;	/* unsigned longs per bitmap */
	unsigned int cursor;	/* where the next lookup in a level starts */
	unsigned int rnd;	/* xorshift32 state, never 0; racy by design */
	unsigned long level_mask; /* bit L: bitmap L may be non-empty */
	unsigned int *where;	/* [nr]: level, SPW_SUM_ASIDE or SPW_SUM_NONE */
	unsigned long *map;	/* [SPW_SUM_BITMAPS][words] */
};

/* Bytes of memory spw_policy_init() needs for @nr rings. */
unsigned long spw_policy_mem_size(unsigned int nr);

/*
 * Set up @p over @mem (spw_policy_mem_size(nr) bytes, zeroed) with no ring
 * filed yet; file each ring with spw_sum_refile() once its accounting is
 * set. @seed seeds P2C's choices (any value).
 */
void spw_policy_init(struct spw_policy *p, void *mem, unsigned int nr,
		     unsigned int kind, unsigned int spill_at,
		     unsigned int entries, unsigned int seed);

/* File ring @i where it stands now. O(1). */
void spw_sum_refile(struct spw_policy *p, const struct spw_ring_acct *rings,
		    unsigned int i, const struct spw_clock *clock);

#define SPW_PICK_DROP	(-1)

/*
 * Choose the ring for a connection that arrived on member @origin. @home
 * is the ring the policy starts from: @origin, or for SPW_POLICY_CPU the
 * ring whose consumer last ran on this CPU. Rings that are full, closed or
 * stalled are chosen only when no responsive ring has room; then @home if
 * it has room at all, then any stalled ring with room. Returns the ring
 * index, or SPW_PICK_DROP when every live ring is full. O(1) amortised.
 */
int spw_pick_ring(struct spw_policy *p, const struct spw_ring_acct *rings,
		  unsigned int origin, unsigned int home,
		  const struct spw_clock *clock);

/*
 * The stalled ring an idle consumer should take work from: the live or
 * closed sibling of @self with the most stealable tokens (pending, less
 * those being handed over now) whose consumer is not responsive, or -1.
 * A scan: the module runs it only after the stall timer found stalled
 * work, and stops once a scan finds nothing to take.
 */
int spw_pick_victim(const struct spw_ring_acct *rings, unsigned int nr,
		    unsigned int self, const struct spw_clock *clock);

/*
 * The ring for a connection that a decision could not place (a drop):
 * an exact scan, no summary, for process context (the drop work) before
 * the connection is reset: the least loaded responsive ring with room,
 * else @home, else any ring with room, else SPW_PICK_DROP. O(nr).
 */
int spw_pick_exact(const struct spw_ring_acct *rings, unsigned int nr,
		   unsigned int home, const struct spw_clock *clock);

#endif /* SPW_POLICY_H */
