// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * spw_policy.c - the least-full choice; see spw_policy.h.
 */
#include "spw_policy.h"

/* Least-outstanding ring with room among the siblings of @origin. */
static int spw_scan(const struct spw_ring_acct *rings, unsigned int nr,
		    unsigned int origin, unsigned int start,
		    const struct spw_clock *clock, int want_responsive)
{
	unsigned int best_out = ~0U;
	int best = SPW_PICK_DROP;
	unsigned int n, i;

	i = start % nr;
	for (n = 0; n < nr; n++, i = (i + 1 == nr) ? 0 : i + 1) {
		const struct spw_ring_acct *r = &rings[i];
		unsigned int out;

		if (i == origin || !r->live)
			continue;
		if (want_responsive && !spw_ring_responsive(r, clock))
			continue;
		out = spw_ring_outstanding(r);
		if (out >= r->entries || out >= best_out)
			continue;
		best_out = out;
		best = i;
		if (!out)
			break;
	}
	return best;
}

int spw_pick_ring(const struct spw_ring_acct *rings, unsigned int nr,
		  unsigned int origin, unsigned int start,
		  const struct spw_clock *clock)
{
	int origin_room, t;

	if (!nr || origin >= nr)
		return SPW_PICK_DROP;
	origin_room = spw_ring_has_room(&rings[origin]);
	if (origin_room && spw_ring_responsive(&rings[origin], clock))
		return origin;
	t = spw_scan(rings, nr, origin, start, clock, 1);
	if (t != SPW_PICK_DROP)
		return t;
	if (origin_room)
		return origin;
	return spw_scan(rings, nr, origin, start, clock, 0);
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

		if (i == self || r->pending <= most ||
		    (r->live && spw_ring_responsive(r, clock)))
			continue;
		most = r->pending;
		victim = i;
	}
	return victim;
}
