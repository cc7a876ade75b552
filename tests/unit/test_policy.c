/* SPDX-License-Identifier: MIT */
/*
 * test_policy: the least-full choice and the ring arithmetic the module
 * compiles (kmod/spw_policy.c, the very same source).
 */
#include <criterion/criterion.h>
#include <limits.h>

#include "spw_policy.h"

#define N 8

/* Stall detection off: the claims' plain "origin, else least-full". */
static const struct spw_clock never = { .now = 0, .stall = SPW_STALL_NEVER };

static unsigned heads[N];
static struct spw_ring_acct rings[N];

/* nr rings of @entries slots, all empty and live. */
static void setup_rings(unsigned nr, unsigned entries)
{
	for (unsigned i = 0; i < nr; i++) {
		heads[i] = 0;
		rings[i] = (struct spw_ring_acct){
			.entries = entries, .live = 1, .khead = &heads[i],
		};
	}
}

/* Put @pending tokens and @posted unconsumed CQEs on ring @i. */
static void load(unsigned i, unsigned pending, unsigned posted)
{
	rings[i].pending = pending;
	heads[i] = rings[i].ktail - posted;
}

Test(ring, posted_wraps_around_u32)
{
	setup_rings(1, 16);
	rings[0].ktail = 5;		/* tail wrapped past UINT_MAX */
	heads[0] = UINT_MAX - 2;	/* 8 posted: -3..4 */
	cr_expect_eq(spw_ring_posted(&rings[0]), 8);
	heads[0] = 5;
	cr_expect_eq(spw_ring_posted(&rings[0]), 0);
}

Test(ring, garbage_head_counts_as_full)
{
	setup_rings(1, 16);
	rings[0].ktail = 100;
	heads[0] = 101;			/* head beyond tail */
	cr_expect_eq(spw_ring_posted(&rings[0]), 16);
	heads[0] = 0x80000000u;		/* huge */
	cr_expect_eq(spw_ring_outstanding(&rings[0]), 16);
	cr_expect_not(spw_ring_has_room(&rings[0]));
	heads[0] = 100 - 17;		/* more in use than the ring holds */
	cr_expect_eq(spw_ring_posted(&rings[0]), 16);
}

Test(ring, outstanding_is_pending_plus_posted_clamped)
{
	setup_rings(1, 16);
	rings[0].ktail = 1000;
	load(0, 3, 4);
	cr_expect_eq(spw_ring_outstanding(&rings[0]), 7);
	load(0, 16, 4);
	cr_expect_eq(spw_ring_outstanding(&rings[0]), 16);
}

Test(pick, origin_with_room_keeps_the_connection)
{
	setup_rings(4, 4);
	load(2, 3, 0);
	cr_expect_eq(spw_pick_ring(rings, 4, 2, 0, &never), 2);
}

Test(pick, full_origin_spills_to_least_full)
{
	setup_rings(4, 4);
	load(0, 4, 0);
	load(1, 2, 1);
	load(2, 1, 0);
	load(3, 1, 2);
	cr_expect_eq(spw_pick_ring(rings, 4, 0, 0, &never), 2);
}

Test(pick, posted_cqes_count_as_well_as_pending)
{
	setup_rings(3, 4);
	load(0, 0, 4);			/* full of unconsumed CQEs */
	load(1, 0, 3);
	load(2, 2, 0);
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &never), 2);
}

Test(pick, ties_rotate_with_the_start_cursor)
{
	setup_rings(4, 4);
	load(0, 4, 0);
	for (unsigned i = 1; i < 4; i++)
		load(i, 1, 0);
	cr_expect_eq(spw_pick_ring(rings, 4, 0, 0, &never), 1);
	cr_expect_eq(spw_pick_ring(rings, 4, 0, 2, &never), 2);
	cr_expect_eq(spw_pick_ring(rings, 4, 0, 3, &never), 3);
	cr_expect_eq(spw_pick_ring(rings, 4, 0, 4, &never), 1);	/* wraps */
}

Test(pick, all_full_drops)
{
	setup_rings(4, 4);
	for (unsigned i = 0; i < 4; i++)
		load(i, i, 4 - i);
	cr_expect_eq(spw_pick_ring(rings, 4, 1, 0, &never), SPW_PICK_DROP);
}

Test(pick, dead_rings_are_never_targets)
{
	setup_rings(3, 4);
	load(0, 4, 0);
	rings[1].live = 0;		/* empty, but its consumer is gone */
	load(2, 3, 0);
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &never), 2);
	load(2, 4, 0);
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &never), SPW_PICK_DROP);
	/* a dead origin spills even when its own counters look empty */
	rings[0].live = 0;
	load(0, 0, 0);
	load(2, 1, 0);
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &never), 2);
}

Test(pick, single_member_group)
{
	setup_rings(1, 2);
	cr_expect_eq(spw_pick_ring(rings, 1, 0, 0, &never), 0);
	load(0, 2, 0);
	cr_expect_eq(spw_pick_ring(rings, 1, 0, 0, &never), SPW_PICK_DROP);
}

Test(pick, garbage_head_on_a_sibling_is_not_room)
{
	setup_rings(3, 4);
	load(0, 4, 0);
	rings[1].ktail = 10;
	heads[1] = 50;			/* would read as "lots of room" unclamped */
	load(2, 2, 0);
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &never), 2);
}

/* Drive a ring to capacity through the policy alone: exactly entries fit. */
Test(pick, capacity_is_exact)
{
	unsigned placed = 0;

	setup_rings(N, 8);
	for (;;) {
		int t = spw_pick_ring(rings, N, 3, placed, &never);

		if (t == SPW_PICK_DROP)
			break;
		rings[t].pending++;
		placed++;
		cr_assert_leq(placed, N * 8);
	}
	cr_expect_eq(placed, N * 8);
	for (unsigned i = 0; i < N; i++)
		cr_expect_eq(rings[i].pending, 8);
}

/*
 * Stall detection: consumers that have not entered within the stall time
 * (and are not asleep in enter) lose new work to responsive siblings.
 */
static const struct spw_clock at_1000 = { .now = 1000, .stall = 20 };

static void activity(unsigned i, unsigned last_active, unsigned waiting)
{
	rings[i].last_active = last_active;
	rings[i].waiting = waiting;
}

Test(stall, stalled_origin_with_room_sends_work_to_a_responsive_sibling)
{
	setup_rings(3, 8);
	activity(0, 900, 0);		/* away for 100 > 20 ticks */
	activity(1, 995, 0);		/* entered 5 ticks ago */
	activity(2, 0, 1);		/* asleep in enter: responsive */
	load(1, 3, 0);
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &at_1000), 2);
	load(2, 5, 0);
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &at_1000), 1);
}

Test(stall, responsive_origin_keeps_its_work)
{
	setup_rings(3, 8);
	activity(0, 990, 0);
	activity(1, 0, 1);
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &at_1000), 0);
}

Test(stall, nobody_responsive_falls_back_to_origin_then_least_full)
{
	setup_rings(3, 4);
	for (unsigned i = 0; i < 3; i++)
		activity(i, 0, 0);
	load(1, 1, 0);
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &at_1000), 0);
	load(0, 4, 0);
	load(2, 2, 0);
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &at_1000), 1);
}

Test(stall, responsive_sibling_must_have_room)
{
	setup_rings(3, 4);
	activity(0, 0, 0);
	activity(1, 0, 1);
	activity(2, 0, 0);
	load(1, 4, 0);			/* responsive but full */
	load(2, 1, 0);
	/* origin stalled but with room beats a stalled sibling */
	cr_expect_eq(spw_pick_ring(rings, 3, 0, 0, &at_1000), 0);
}

Test(stall, clock_wraps_without_false_stalls)
{
	const struct spw_clock wrapped = { .now = 5, .stall = 20 };

	setup_rings(2, 4);
	activity(0, 0xfffffff0u, 0);	/* 21 ticks ago, across the wrap */
	activity(1, 0, 1);
	cr_expect_eq(spw_pick_ring(rings, 2, 0, 0, &wrapped), 1);
	activity(0, 0xfffffffeu, 0);	/* 7 ticks ago */
	cr_expect_eq(spw_pick_ring(rings, 2, 0, 0, &wrapped), 0);
}

Test(stall, victim_is_the_stalled_ring_with_most_waiting)
{
	setup_rings(4, 8);
	activity(0, 1000, 0);		/* the thief, just entered */
	activity(1, 900, 0);
	activity(2, 900, 0);
	activity(3, 0, 1);		/* waiting: never a victim */
	load(1, 2, 0);
	load(2, 5, 0);
	load(3, 7, 0);
	cr_expect_eq(spw_pick_victim(rings, 4, 0, &at_1000), 2);
	activity(2, 995, 0);		/* its consumer came back */
	cr_expect_eq(spw_pick_victim(rings, 4, 0, &at_1000), 1);
	load(1, 0, 0);
	cr_expect_eq(spw_pick_victim(rings, 4, 0, &at_1000), -1);
	cr_expect_eq(spw_pick_victim(rings, 4, 0, &never), -1, "stall detection off");
}
