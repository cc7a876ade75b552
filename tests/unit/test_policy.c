/* SPDX-License-Identifier: MIT */
/*
 * test_policy: the placement policies, their summary and the ring
 * arithmetic the module compiles (kmod/spw_policy.c, the very same source).
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdlib.h>

#include "spw_policy.h"

#define N 8
#define BIG 1024

/* Stall detection off: the claims' plain "origin, else least-full". */
static const struct spw_clock never = { .now = 0, .stall = SPW_STALL_NEVER };

static unsigned heads[BIG];
static struct spw_ring_acct rings[BIG];
static struct spw_policy pol;
static unsigned long mem[4096];
static unsigned nr_rings;

/* nr rings of @entries slots, all empty and live, under policy @kind. */
static void setup_policy(unsigned nr, unsigned entries, unsigned kind,
			 unsigned spill_at)
{
	cr_assert_leq(spw_policy_mem_size(nr), sizeof(mem));
	nr_rings = nr;
	for (unsigned i = 0; i < nr; i++) {
		heads[i] = 0;
		rings[i] = (struct spw_ring_acct){
			.entries = entries, .live = 1, .khead = &heads[i],
		};
	}
	spw_policy_init(&pol, mem, nr, kind, spill_at, entries, 12345);
}

static void setup_rings(unsigned nr, unsigned entries)
{
	setup_policy(nr, entries, SPW_KIND_ORIGIN, 0);
}

/* Put @pending tokens and @posted unconsumed CQEs on ring @i. */
static void load(unsigned i, unsigned pending, unsigned posted)
{
	rings[i].pending = pending;
	heads[i] = rings[i].ktail - posted;
}

/*
 * The module re-files a ring whenever its accounting changes; the tests
 * change rings[] directly, so re-file them all before each decision.
 */
static int pick_at(unsigned nr, unsigned origin, unsigned home,
		   const struct spw_clock *c)
{
	cr_assert_eq(nr, nr_rings);
	for (unsigned i = 0; i < nr; i++)
		spw_sum_refile(&pol, rings, i, c);
	return spw_pick_ring(&pol, rings, origin, home, c);
}

static int pick(unsigned nr, unsigned origin, const struct spw_clock *c)
{
	return pick_at(nr, origin, origin, c);
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
	cr_expect_eq(pick(4, 2, &never), 2);
}

Test(pick, full_origin_spills_to_least_full)
{
	setup_rings(4, 4);
	load(0, 4, 0);
	load(1, 2, 1);
	load(2, 1, 0);
	load(3, 1, 2);
	cr_expect_eq(pick(4, 0, &never), 2);
}

Test(pick, posted_cqes_count_as_well_as_pending)
{
	setup_rings(3, 4);
	load(0, 0, 4);			/* full of unconsumed CQEs */
	load(1, 0, 3);
	load(2, 2, 0);
	cr_expect_eq(pick(3, 0, &never), 2);
}

Test(pick, ties_rotate)
{
	setup_rings(4, 4);
	load(0, 4, 0);
	for (unsigned i = 1; i < 4; i++)
		load(i, 1, 0);
	cr_expect_eq(pick(4, 0, &never), 1);
	cr_expect_eq(pick(4, 0, &never), 2);
	cr_expect_eq(pick(4, 0, &never), 3);
	cr_expect_eq(pick(4, 0, &never), 1);	/* wraps */
}

Test(pick, all_full_drops)
{
	setup_rings(4, 4);
	for (unsigned i = 0; i < 4; i++)
		load(i, i, 4 - i);
	cr_expect_eq(pick(4, 1, &never), SPW_PICK_DROP);
}

Test(pick, dead_rings_are_never_targets)
{
	setup_rings(3, 4);
	load(0, 4, 0);
	rings[1].live = 0;		/* empty, but its consumer is gone */
	load(2, 3, 0);
	cr_expect_eq(pick(3, 0, &never), 2);
	load(2, 4, 0);
	cr_expect_eq(pick(3, 0, &never), SPW_PICK_DROP);
	/* a dead origin spills even when its own counters look empty */
	rings[0].live = 0;
	load(0, 0, 0);
	load(2, 1, 0);
	cr_expect_eq(pick(3, 0, &never), 2);
}

Test(pick, single_member_group)
{
	setup_rings(1, 2);
	cr_expect_eq(pick(1, 0, &never), 0);
	load(0, 2, 0);
	cr_expect_eq(pick(1, 0, &never), SPW_PICK_DROP);
}

Test(pick, garbage_head_on_a_sibling_is_not_room)
{
	setup_rings(3, 4);
	load(0, 4, 0);
	rings[1].ktail = 10;
	heads[1] = 50;			/* would read as "lots of room" unclamped */
	load(2, 2, 0);
	cr_expect_eq(pick(3, 0, &never), 2);
}

/* Drive a ring to capacity through the policy alone: exactly entries fit. */
Test(pick, capacity_is_exact)
{
	unsigned placed = 0;

	setup_rings(N, 8);
	for (;;) {
		int t = pick(N, 3, &never);

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
	cr_expect_eq(pick(3, 0, &at_1000), 2);
	load(2, 5, 0);
	cr_expect_eq(pick(3, 0, &at_1000), 1);
}

Test(stall, responsive_origin_keeps_its_work)
{
	setup_rings(3, 8);
	activity(0, 990, 0);
	activity(1, 0, 1);
	cr_expect_eq(pick(3, 0, &at_1000), 0);
}

Test(stall, nobody_responsive_falls_back_to_origin_then_least_full)
{
	setup_rings(3, 4);
	for (unsigned i = 0; i < 3; i++)
		activity(i, 0, 0);
	load(1, 1, 0);
	cr_expect_eq(pick(3, 0, &at_1000), 0);
	load(0, 4, 0);
	load(2, 2, 0);
	cr_expect_eq(pick(3, 0, &at_1000), 1);
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
	cr_expect_eq(pick(3, 0, &at_1000), 0);
}

Test(stall, clock_wraps_without_false_stalls)
{
	const struct spw_clock wrapped = { .now = 5, .stall = 20 };

	setup_rings(2, 4);
	activity(0, 0xfffffff0u, 0);	/* 21 ticks ago, across the wrap */
	activity(1, 0, 1);
	cr_expect_eq(pick(2, 0, &wrapped), 1);
	activity(0, 0xfffffffeu, 0);	/* 7 ticks ago */
	cr_expect_eq(pick(2, 0, &wrapped), 0);
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

/*
 * Tokens being handed over (in flight) are their consumer's: a victim is
 * chosen by what can be stolen. A stalled ring whose tokens were all in
 * flight used to be chosen, yield nothing, and be chosen again on every
 * idle enter (an O(members) scan each time).
 */
Test(stall, tokens_in_flight_are_not_stealable)
{
	setup_rings(3, 8);
	activity(0, 1000, 0);		/* the thief */
	activity(1, 900, 0);
	activity(2, 900, 0);
	load(1, 5, 0);
	rings[1].inflight = 5;		/* all five being handed over */
	load(2, 2, 0);
	cr_expect_eq(spw_pick_victim(rings, 3, 0, &at_1000), 2);
	load(2, 0, 0);
	cr_expect_eq(spw_pick_victim(rings, 3, 0, &at_1000), -1);
	rings[1].inflight = 3;		/* two of them can be taken */
	cr_expect_eq(spw_pick_victim(rings, 3, 0, &at_1000), 1);
}

/*
 * A ring nobody holds (never opened, or vacant) has no consumer: it takes
 * other members' work only when no ring with a consumer has room, with
 * stall detection or without, and keeps its own member's connections
 * while it has room (ORIGIN, P2C: as a plain listener's queue would). It
 * used to count as responsive, so LEAST and P2C sent other members'
 * connections to it as the least loaded and, with SPW_STALL_OFF, nothing
 * ever served them.
 */
Test(stall, a_ring_nobody_holds_takes_no_siblings_work)
{
	setup_policy(3, 4, SPW_KIND_LEAST, 0);
	activity(0, 0, 1);		/* both consumers asleep in enter */
	activity(1, 0, 1);
	rings[2].unattended = 1;
	load(0, 2, 0);
	load(1, 3, 0);
	cr_expect_eq(pick(3, 0, &never), 0, "stall off: the empty unattended ring won");
	cr_expect_eq(pick(3, 1, &at_1000), 0);
	load(0, 4, 0);
	load(1, 4, 0);
	cr_expect_eq(pick(3, 0, &never), 2, "the last resort before a drop");
	cr_expect_eq(pick(3, 1, &at_1000), 2);

	setup_policy(3, 4, SPW_KIND_P2C, 0);
	activity(0, 0, 1);
	activity(1, 0, 1);
	rings[2].unattended = 1;
	for (unsigned i = 0; i < 8; i++) {
		load(0, 1 + i % 3, 0);
		cr_expect_neq(pick(3, 0, &never), 2, "P2C sent a sibling's work to it");
	}
	cr_expect_eq(pick(3, 2, &never), 2, "its own member's work stays while it has room");
	load(2, 4, 0);
	cr_expect_neq(pick(3, 2, &never), 2);
}

/*
 * A ring whose consumer could not take a connection (no fd, no memory)
 * has no room until the consumer is back: the policy sends work elsewhere,
 * and drops nothing for its sake.
 */
Test(pick, a_refusing_ring_has_no_room)
{
	setup_rings(2, 8);
	rings[0].refusing = 1;
	cr_expect_eq(pick(2, 0, &never), 1);
	load(1, 8, 0);
	cr_expect_eq(pick(2, 0, &never), SPW_PICK_DROP);
	rings[0].refusing = 0;
	cr_expect_eq(pick(2, 0, &never), 0);
}

/* The policies' defining choices. */

Test(policy, least_joins_the_shortest_queue_origin_on_ties)
{
	setup_policy(4, 16, SPW_KIND_LEAST, 0);
	load(0, 2, 0);
	load(1, 1, 1);
	load(2, 1, 0);
	load(3, 3, 0);
	cr_expect_eq(pick(4, 0, &never), 2, "origin has room, but 2 is shorter");
	load(0, 1, 0);
	cr_expect_eq(pick(4, 0, &never), 0, "a tie keeps the origin");
}

Test(policy, origin_keeps_work_until_spill_at)
{
	setup_policy(3, 16, SPW_KIND_ORIGIN, 4);
	load(0, 3, 0);
	cr_expect_eq(pick(3, 0, &never), 0);
	load(0, 4, 0);			/* at spill_at: spill though not full */
	load(1, 2, 0);
	load(2, 1, 0);
	cr_expect_eq(pick(3, 0, &never), 2);
	load(1, 5, 0);
	load(2, 6, 0);			/* nobody shorter: stay */
	cr_expect_eq(pick(3, 0, &never), 0);
}

Test(policy, p2c_compares_the_origin_with_a_random_sibling)
{
	/* two members: the "random sibling" is always the other one */
	setup_policy(2, 16, SPW_KIND_P2C, 0);
	load(0, 3, 0);
	load(1, 1, 0);
	cr_expect_eq(pick(2, 0, &never), 1);
	load(1, 3, 0);
	cr_expect_eq(pick(2, 0, &never), 0, "a tie keeps the origin");
	load(0, 16, 0);
	cr_expect_eq(pick(2, 0, &never), 1, "a full origin spills");
}

Test(policy, p2c_samples_only_siblings_and_spreads)
{
	unsigned hits[N] = { 0 };

	setup_policy(N, 64, SPW_KIND_P2C, 0);
	load(0, 10, 0);			/* a busy origin: every pick leaves it */
	for (unsigned k = 0; k < 700; k++) {
		int t = pick(N, 0, &never);

		cr_assert(t > 0 && t < N, "pick %d", t);
		hits[t]++;
	}
	for (unsigned i = 1; i < N; i++)
		cr_expect_gt(hits[i], 50, "ring %u chosen %u times of 700", i, hits[i]);
}

Test(policy, cpu_prefers_the_ring_that_runs_here)
{
	setup_policy(4, 16, SPW_KIND_CPU, 0);
	load(0, 1, 0);
	cr_expect_eq(pick_at(4, 0, 3, &never), 3, "home 3 has room");
	load(3, 16, 0);
	cr_expect_eq(pick_at(4, 0, 3, &never), 1, "home full: least loaded");
	cr_expect_eq(pick_at(4, 0, 99, &never), 0, "no home: the origin");
}

/*
 * A consumer waiting in poll/epoll never sleeps in enter: it is
 * responsive while nothing waits for it, and until work has waited a
 * stall time.
 */
Test(policy, poll_consumer_is_responsive_while_idle)
{
	const struct spw_clock t = { .now = 1000, .stall = 20 };

	setup_policy(2, 16, SPW_KIND_ORIGIN, 0);
	rings[0].last_active = 100;	/* polled long ago, idle since */
	rings[0].polled = 1;
	rings[1].waiting = 1;
	cr_expect_eq(pick(2, 0, &t), 0, "idle in epoll: responsive");
	load(0, 1, 0);
	rings[0].work_since = 990;
	cr_expect_eq(pick(2, 0, &t), 0, "work waits 10 < 20 ticks");
	rings[0].work_since = 970;
	cr_expect_eq(pick(2, 0, &t), 1, "work waited 30 ticks: stalled");
	rings[0].polled = 0;
	load(0, 0, 0);
	cr_expect_eq(pick(2, 0, &t), 1, "not polled, away 900 ticks: stalled");
}

/*
 * The summary against a full scan: over random loads, stalls and
 * closures, LEAST picks a ring whose load is the least among responsive
 * rings with room (exactly below SPW_SUM_EXACT, within 2x above), and
 * drops only when no live ring has room.
 */
Test(summary, least_matches_a_full_scan, .timeout = 30)
{
	const struct spw_clock t = { .now = 5000, .stall = 20 };
	unsigned seed = 1;

	setup_policy(BIG, 64, SPW_KIND_LEAST, 0);
	for (unsigned i = 0; i < BIG; i++) {
		rings[i].waiting = 1;
		spw_sum_refile(&pol, rings, i, &t);
	}
	for (unsigned k = 0; k < 20000; k++) {
		unsigned i = (seed = seed * 1103515245 + 12345) % BIG, best = ~0u;
		unsigned origin = (seed >> 8) % BIG;
		int got;

		/* the module re-files every ring whose accounting it changes */
		switch ((seed >> 20) % 8) {
		case 0: rings[i].live = !rings[i].live; break;
		case 1: rings[i].waiting = !rings[i].waiting; break;
		default: rings[i].pending = (seed >> 4) % 70 > 64 ? 64 : (seed >> 4) % 64; break;
		}
		spw_sum_refile(&pol, rings, i, &t);
		for (unsigned j = 0; j < BIG; j++)
			if (spw_ring_has_room(&rings[j]) && spw_ring_responsive(&rings[j], &t) &&
			    spw_ring_outstanding(&rings[j]) < best)
				best = spw_ring_outstanding(&rings[j]);
		got = spw_pick_ring(&pol, rings, origin, origin, &t);
		if (best == ~0u) {
			/* nobody responsive: a stalled ring with room, or a drop */
			if (got == SPW_PICK_DROP)
				for (unsigned j = 0; j < BIG; j++)
					cr_assert_not(spw_ring_has_room(&rings[j]), "dropped with room on %u", j);
			continue;
		}
		cr_assert_geq(got, 0);
		unsigned o = spw_ring_outstanding(&rings[got]);
		cr_assert(spw_ring_responsive(&rings[got], &t));
		if (best < 8)
			cr_assert_eq(o, best, "step %u: picked %u (load %u), least %u", k, got, o, best);
		else
			cr_assert_lt(o, 2 * best, "step %u: load %u, least %u", k, o, best);
	}
}

/* P2C in a sparse group: both samples useless, the least loaded still wins. */
Test(policy, p2c_in_a_sparse_group_still_leaves_a_loaded_origin)
{
	setup_policy(BIG, 16, SPW_KIND_P2C, 0);
	for (unsigned i = 0; i < BIG; i++)
		rings[i].live = i < 4;		/* 4 workers, 1020 closed members */
	load(0, 5, 0);
	load(1, 3, 0);
	load(2, 1, 0);
	load(3, 4, 0);
	for (int k = 0; k < 50; k++)
		cr_expect_eq(pick(BIG, 0, &never), 2, "try %d", k);
}

/*
 * The module decides without a lock: one decision per listener at a time,
 * concurrently, while the rings' owners re-file them. Four threads re-file
 * and pick over 64 rings whose loads they keep changing: no lookup may
 * hang or name a ring out of range. Afterwards one re-filing of each ring
 * must put the summary right (each ring in its level's bitmap, the level
 * in the mask), whatever the races left (a stale bit, a ring filed
 * nowhere), and a lookup must find the least loaded ring past stale bits.
 * A smoke test: two host cores rarely hit the narrow windows, so it does
 * not prove the barriers (the argument is in spw_policy.c).
 */
#include <pthread.h>
#include <stdint.h>

#define RACE_RINGS 64
#define RACE_THREADS 4

static void *race_loop(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;

	for (unsigned k = 0; k < 200000; k++) {
		unsigned i;

		seed ^= seed << 13;
		seed ^= seed >> 17;
		seed ^= seed << 5;
		i = seed % RACE_RINGS;
		__atomic_store_n(&rings[i].pending, (seed >> 8) % 12, __ATOMIC_RELAXED);
		spw_sum_refile(&pol, rings, i, &never);
		int t = spw_pick_ring(&pol, rings, i, i, &never);

		if (t != SPW_PICK_DROP && (t < 0 || t >= RACE_RINGS))
			abort();
	}
	return NULL;
}

Test(summary, concurrent_refiles_and_picks_keep_it_whole)
{
	pthread_t th[RACE_THREADS];

	setup_policy(RACE_RINGS, 16, SPW_KIND_LEAST, 0);
	for (unsigned i = 0; i < RACE_RINGS; i++)
		spw_sum_refile(&pol, rings, i, &never);
	for (uintptr_t t = 0; t < RACE_THREADS; t++)
		cr_assert_eq(pthread_create(&th[t], NULL, race_loop, (void *)t), 0);
	for (unsigned t = 0; t < RACE_THREADS; t++)
		pthread_join(th[t], NULL);
	/* quiescent: one more re-filing each, and every ring is where it should be */
	for (unsigned i = 0; i < RACE_RINGS; i++) {
		unsigned lvl = rings[i].pending;

		spw_sum_refile(&pol, rings, i, &never);
		cr_assert_eq(pol.where[i], lvl < 8 ? lvl : 8, "ring %u filed at %u, load %u",
			     i, pol.where[i], lvl);
		cr_assert(pol.map[(unsigned long)pol.where[i] * pol.words] & (1UL << i),
			  "ring %u not in its level's bitmap", i);
		cr_assert(pol.level_mask & (1UL << pol.where[i]),
			  "level %u of ring %u is not in the mask", pol.where[i], i);
	}
	/* the least loaded ring is found, whatever stale bits remain above it */
	for (unsigned i = 0; i < RACE_RINGS; i++)
		load(i, 5, 0);
	load(17, 1, 0);
	for (unsigned i = 0; i < RACE_RINGS; i++)
		spw_sum_refile(&pol, rings, i, &never);
	cr_assert_eq(spw_pick_ring(&pol, rings, 3, 3, &never), 17);
}
