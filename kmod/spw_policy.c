// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * spw_policy.c - the placement policies and their summary; see spw_policy.h.
 */
#include "spw_policy.h"

static unsigned long *spw_bm(struct spw_policy *p, unsigned int b)
{
	return p->map + (unsigned long)b * p->words;
}

/* First set bit of @bm at or after @from, wrapping around; -1 if none. */
static int spw_bm_find(const unsigned long *bm, unsigned int words,
		       unsigned int from)
{
	unsigned int w = from / SPW_LONG_BITS, n;
	unsigned long cur = SPW_READ_ONCE(bm[w]) & (~0UL << (from % SPW_LONG_BITS));

	for (n = 0; n <= words; n++) {
		if (cur)
			return w * SPW_LONG_BITS + __builtin_ctzl(cur);
		w = w + 1 == words ? 0 : w + 1;
		cur = SPW_READ_ONCE(bm[w]);
	}
	return -1;
}

static unsigned int spw_level(unsigned int out)
{
	if (out < SPW_SUM_EXACT)
		return out;
	/* 8..15 -> 8, 16..31 -> 9, ... 16384..32767 -> 19 */
	return 5 + 31 - __builtin_clz(out);
}

unsigned long spw_policy_mem_size(unsigned int nr)
{
	unsigned long words = (nr + SPW_LONG_BITS - 1) / SPW_LONG_BITS;
	unsigned long where = (nr * sizeof(unsigned int) + sizeof(long) - 1) /
			      sizeof(long) * sizeof(long);

	return where + SPW_SUM_BITMAPS * words * sizeof(long);
}

void spw_policy_init(struct spw_policy *p, void *mem, unsigned int nr,
		     unsigned int kind, unsigned int spill_at,
		     unsigned int entries, unsigned int seed)
{
	unsigned long where = (nr * sizeof(unsigned int) + sizeof(long) - 1) /
			      sizeof(long) * sizeof(long);
	unsigned int i;

	p->kind = kind;
	p->spill_at = spill_at && spill_at < entries ? spill_at : entries;
	p->nr = nr;
	p->words = (nr + SPW_LONG_BITS - 1) / SPW_LONG_BITS;
	p->cursor = 0;
	p->rnd = seed ? seed : 0x9e3779b9u;
	p->level_mask = 0;
	p->where = mem;
	p->map = (unsigned long *)((char *)mem + where);
	for (i = 0; i < nr; i++)
		p->where[i] = SPW_SUM_NONE;
	for (i = 0; i < SPW_SUM_BITMAPS * p->words; i++)
		p->map[i] = 0;
}

static int spw_bm_test(const unsigned long *bm, unsigned int i)
{
	return (SPW_READ_ONCE(bm[i / SPW_LONG_BITS]) >> (i % SPW_LONG_BITS)) & 1;
}

static int spw_bm_empty(const unsigned long *bm, unsigned int words)
{
	unsigned int w;

	for (w = 0; w < words; w++)
		if (SPW_READ_ONCE(bm[w]))
			return 0;
	return 1;
}

/*
 * Ring @i leaves bitmap @b. When the bitmap looks empty, clear its bit in
 * @level_mask, then look again: a ring filed there meanwhile either sees
 * the cleared bit (spw_bm_add() sets it again) or is seen here (the full
 * barriers on both sides order each one's store before its load).
 */
static void spw_bm_del(struct spw_policy *p, unsigned int b, unsigned int i)
{
	unsigned long *bm = spw_bm(p, b);

	spw_clear_bit(i, bm);
	if (!spw_bm_empty(bm, p->words))
		return;
	spw_clear_bit(b, &p->level_mask);
	spw_mb_after_atomic();
	if (!spw_bm_empty(bm, p->words))
		spw_set_bit(b, &p->level_mask);
}

static void spw_bm_add(struct spw_policy *p, unsigned int b, unsigned int i)
{
	unsigned long *bm = spw_bm(p, b);

	/* also heals a bit a concurrent lookup cleared (see spw_sum_take()) */
	if (!spw_bm_test(bm, i))
		spw_set_bit(i, bm);
	spw_mb_after_atomic();
	if (!spw_bm_test(&p->level_mask, b))
		spw_set_bit(b, &p->level_mask);
}

static void spw_sum_move(struct spw_policy *p, unsigned int i, unsigned int to)
{
	unsigned int from = SPW_READ_ONCE(p->where[i]);

	/*
	 * Most re-filings find the ring where it is: then write nothing (the
	 * words are shared by every ring's CPU), only heal a lost bit.
	 */
	if (from == to) {
		if (to != SPW_SUM_NONE)
			spw_bm_add(p, to, i);
		return;
	}
	from = spw_xchg(&p->where[i], to);

	if (from != to && from != SPW_SUM_NONE)
		spw_bm_del(p, from, i);
	if (to != SPW_SUM_NONE)
		spw_bm_add(p, to, i);
}

void spw_sum_refile(struct spw_policy *p, const struct spw_ring_acct *rings,
		    unsigned int i, const struct spw_clock *clock)
{
	const struct spw_ring_acct *r = &rings[i];
	unsigned int to = SPW_SUM_NONE, out;

	if (SPW_READ_ONCE(r->live) && !SPW_READ_ONCE(r->refusing)) {
		out = spw_ring_outstanding(r);
		if (out < r->entries)
			to = spw_ring_responsive(r, clock) ? spw_level(out) : SPW_SUM_ASIDE;
	}
	spw_sum_move(p, i, to);
}

/*
 * Could ring @r take work now, as the summary would file it (in a load
 * level)? Read straight from its accounting: a decision that needs only a
 * few rings looks at them without writing the summary.
 */
static int spw_ring_can_take(const struct spw_ring_acct *r, const struct spw_clock *c)
{
	return spw_ring_has_room(r) && spw_ring_responsive(r, c);
}

/*
 * A ring filed in bitmap @b, re-filed before it is trusted: -1 when the
 * bitmap is (now) empty or SPW_SUM_TRIES candidates moved on. A candidate
 * whose bit is stale (a concurrent re-filing put it elsewhere) loses the
 * bit; should that race with a re-filing into @b, the ring's next
 * re-filing puts it back (spw_bm_add()).
 */
static int spw_sum_take(struct spw_policy *p, const struct spw_ring_acct *rings,
			unsigned int b, const struct spw_clock *clock)
{
	unsigned int tries;

	for (tries = 0; tries < SPW_SUM_TRIES; tries++) {
		int t = spw_bm_find(spw_bm(p, b), p->words, SPW_READ_ONCE(p->cursor));

		if (t < 0)
			return -1;
		spw_sum_refile(p, rings, t, clock);
		if (SPW_READ_ONCE(p->where[t]) == b) {
			SPW_WRITE_ONCE(p->cursor, (unsigned int)t + 1 == p->nr ? 0 : t + 1);
			return t;
		}
		if (spw_bm_test(spw_bm(p, b), t))
			spw_clear_bit(t, spw_bm(p, b));
	}
	return -1;
}

/*
 * The least loaded responsive ring with room (exact below SPW_SUM_EXACT,
 * to a factor of two above: rings in one level tie), @home on ties, else
 * the next one from the cursor so that ties rotate. -1 when no responsive
 * ring has room, as far as the summary knows. @home is re-filed first; at
 * most SPW_SUM_LEVELS levels, SPW_SUM_TRIES candidates each.
 */
static int spw_sum_least(struct spw_policy *p, const struct spw_ring_acct *rings,
			 unsigned int home, const struct spw_clock *clock)
{
	unsigned long mask;

	spw_sum_refile(p, rings, home, clock);
	mask = SPW_READ_ONCE(p->level_mask) & ((1UL << SPW_SUM_LEVELS) - 1);

	while (mask) {
		unsigned int lvl = __builtin_ctzl(mask);
		int t;

		mask &= mask - 1;
		if (SPW_READ_ONCE(p->where[home]) == lvl)
			return home;	/* re-filed above */
		t = spw_sum_take(p, rings, lvl, clock);
		if (t >= 0)
			return t;
	}
	return -1;
}

static unsigned int spw_rand(struct spw_policy *p)
{
	unsigned int x = SPW_READ_ONCE(p->rnd);

	/* two CPUs may draw the same number: the choice stays random enough */
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	SPW_WRITE_ONCE(p->rnd, x ? x : 0x9e3779b9u);
	return x;
}

/* The less loaded of two random siblings of @home that can take work, or -1. */
static int spw_sum_two(struct spw_policy *p, const struct spw_ring_acct *rings,
		       unsigned int home, const struct spw_clock *clock)
{
	unsigned int k, i, out, best_out = 0;
	int best = -1;

	if (p->nr < 2)
		return -1;
	for (k = 0; k < 2; k++) {
		i = spw_rand(p) % (p->nr - 1);
		if (i >= home)
			i++;
		if (!spw_ring_can_take(&rings[i], clock))
			continue;
		out = spw_ring_outstanding(&rings[i]);
		if (best < 0 || out < best_out) {
			best = i;
			best_out = out;
		}
	}
	return best;
}

/* A stalled ring with room: the last resort before a drop. */
static int spw_sum_aside(struct spw_policy *p, const struct spw_ring_acct *rings,
			 const struct spw_clock *clock)
{
	unsigned int tries;

	if (!spw_bm_test(&p->level_mask, SPW_SUM_ASIDE))
		return SPW_PICK_DROP;
	for (tries = 0; tries < SPW_SUM_TRIES; tries++) {
		int t = spw_bm_find(spw_bm(p, SPW_SUM_ASIDE), p->words,
				    SPW_READ_ONCE(p->cursor));

		if (t < 0)
			break;
		if (spw_ring_has_room(&rings[t]))
			return t;
		spw_sum_refile(p, rings, t, clock);	/* full or closed: out */
		if (SPW_READ_ONCE(p->where[t]) != SPW_SUM_ASIDE &&
		    spw_bm_test(spw_bm(p, SPW_SUM_ASIDE), t))
			spw_clear_bit(t, spw_bm(p, SPW_SUM_ASIDE));
	}
	return SPW_PICK_DROP;
}

int spw_pick_ring(struct spw_policy *p, const struct spw_ring_acct *rings,
		  unsigned int origin, unsigned int home,
		  const struct spw_clock *clock)
{
	unsigned int home_out = 0;
	int home_ok, s, t;

	if (origin >= p->nr)
		return SPW_PICK_DROP;
	if (home >= p->nr)
		home = origin;
	/*
	 * A home nobody holds yet (its worker starts late) keeps its own
	 * connections while it has room, as a plain listener's queue would;
	 * it is never a sibling's target (the summary leaves it aside).
	 */
	home_ok = spw_ring_can_take(&rings[home], clock) ||
		  (SPW_READ_ONCE(rings[home].unattended) && spw_ring_has_room(&rings[home]));
	if (home_ok)
		home_out = spw_ring_outstanding(&rings[home]);

	switch (p->kind) {
	case SPW_KIND_LEAST:
		t = spw_sum_least(p, rings, home, clock);
		break;
	case SPW_KIND_P2C:
		s = spw_sum_two(p, rings, home, clock);
		/*
		 * Neither sample can take work (a large group of mostly idle
		 * members): compare with the least loaded instead, or a sparse
		 * group would degrade to ORIGIN.
		 */
		if (s < 0)
			s = spw_sum_least(p, rings, home, clock);
		if (home_ok && home_out < p->spill_at &&
		    (s < 0 || home_out <= spw_ring_outstanding(&rings[s])))
			return home;
		if (s >= 0 && (!home_ok || spw_ring_outstanding(&rings[s]) < home_out))
			return s;
		t = spw_sum_least(p, rings, home, clock);
		break;
	default:	/* SPW_KIND_ORIGIN, SPW_KIND_CPU: home first */
		if (home_ok && home_out < p->spill_at)
			return home;
		t = spw_sum_least(p, rings, home, clock);
		break;
	}
	if (t >= 0)
		return t;
	/* no responsive ring has room */
	if (spw_ring_has_room(&rings[home]))
		return home;
	if (spw_ring_has_room(&rings[origin]))
		return origin;
	return spw_sum_aside(p, rings, clock);
}

int spw_pick_victim(const struct spw_ring_acct *rings, unsigned int nr,
		    unsigned int self, const struct spw_clock *clock)
{
	unsigned int most = 0, i;
	int victim = -1;

	if (clock->stall == SPW_STALL_NEVER)
		return -1;
	for (i = 0; i < nr; i++) {
		const struct spw_ring_acct *r = &rings[i];
		unsigned int stealable = SPW_READ_ONCE(r->pending) -
					 SPW_READ_ONCE(r->inflight);

		if (i == self || stealable <= most ||
		    (SPW_READ_ONCE(r->live) && spw_ring_responsive(r, clock)))
			continue;
		most = stealable;
		victim = i;
	}
	return victim;
}

int spw_pick_exact(const struct spw_ring_acct *rings, unsigned int nr,
		   unsigned int home, const struct spw_clock *clock)
{
	unsigned int i, out, best_out = 0;
	int best = -1, any = -1;

	for (i = 0; i < nr; i++) {
		const struct spw_ring_acct *r = &rings[i];

		if (!spw_ring_has_room(r))
			continue;
		if (any < 0 || i == home)
			any = i;
		if (!spw_ring_responsive(r, clock))
			continue;
		out = spw_ring_outstanding(r);
		if (best < 0 || out < best_out || (out == best_out && i == home)) {
			best = i;
			best_out = out;
		}
	}
	return best >= 0 ? best : any >= 0 ? any : SPW_PICK_DROP;
}
