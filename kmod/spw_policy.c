// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * spw_policy.c - the least-full choice; see spw_policy.h.
 */
#include "spw_policy.h"

int spw_pick_ring(const struct spw_ring_acct *rings, unsigned int nr,
		  unsigned int origin, unsigned int start)
{
	unsigned int best_out = ~0U;
	int best = SPW_PICK_DROP;
	unsigned int n, i;

	if (origin < nr && spw_ring_has_room(&rings[origin]))
		return origin;

	if (!nr)
		return SPW_PICK_DROP;
	i = start % nr;
	for (n = 0; n < nr; n++, i = (i + 1 == nr) ? 0 : i + 1) {
		const struct spw_ring_acct *r = &rings[i];
		unsigned int out;

		if (i == origin || !r->live)
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
