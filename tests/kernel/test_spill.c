/* SPDX-License-Identifier: MIT */
/*
 * test_spill: a full ring spills to the least-full sibling (claim 1);
 * when every ring is full the connection is reset promptly and counted
 * (claim 2), and service resumes as soon as a worker consumes. TCP's own
 * backlog is never what refuses a connection while rings have room.
 */
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

#define MEMBERS 4
#define ENTRIES 4

/* Wait until the group has placed @n connections in all. */
static void wait_arrived(int gfd, unsigned long n)
{
	struct spw_group_stats st;

	for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(5000)) {
		cr_assert_geq(spw_group_stats_full(gfd, &st, NULL, 0), 0);
		if (st.total.arrived >= n)
			return;
	}
	cr_assert_fail("only %llu of %lu connections arrived",
		       (unsigned long long)st.total.arrived, n);
}

/*
 * Members on different ports, so the test decides where each connection
 * arrives: everything goes to member 0, whose worker never consumes.
 */
Test(spill, stalled_member_spills_everything_past_its_ring, .timeout = 60)
{
	enum { CONNS = 15 };
	int lfd[MEMBERS], cfd[CONNS], gfd;
	struct spw_ring ring[MEMBERS];
	struct spw_cqe cqe[CONNS];
	struct spw_member_stats ms[MEMBERS];
	unsigned seen[CONNS] = { 0 }, got = 0, spilled = 0;

	t_listeners(lfd, MEMBERS, false, 8);
	gfd = t_group(lfd, MEMBERS, ENTRIES);
	for (unsigned i = 0; i < MEMBERS; i++)
		t_ring(&ring[i], gfd, i);

	for (unsigned i = 0; i < CONNS; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	wait_arrived(gfd, CONNS);

	/* 4 wait for member 0; 11 spill over 3 siblings of 4 slots each */
	for (unsigned i = 1; i < MEMBERS; i++) {
		unsigned n = t_reap(&ring[i], ENTRIES, 3000, &cqe[got]);

		for (unsigned k = got; k < got + n; k++) {
			cr_expect_eq(cqe[k].flags & SPW_CQE_F_SPILLED, SPW_CQE_F_SPILLED);
			cr_expect_eq(cqe[k].origin, 0u);
			cr_expect_eq(cqe[k].member, i);
			spilled++;
		}
		got += n;
	}
	cr_expect_eq(spilled, CONNS - ENTRIES);
	/* the stalled worker wakes and finds its own four, not spilled */
	unsigned own = t_reap(&ring[0], ENTRIES, 3000, &cqe[got]);
	cr_expect_eq(own, (unsigned)ENTRIES);
	for (unsigned k = got; k < got + own; k++)
		cr_expect_eq(cqe[k].flags, 0u);
	got += own;
	cr_assert_eq(got, (unsigned)CONNS);

	/* every connection exactly once */
	for (unsigned k = 0; k < got; k++) {
		uint32_t id = t_read_id(cqe[k].fd);

		cr_assert_lt(id, (unsigned)CONNS);
		seen[id]++;
		close(cqe[k].fd);
	}
	for (unsigned i = 0; i < CONNS; i++)
		cr_expect_eq(seen[i], 1u, "connection %u seen %u times", i, seen[i]);

	cr_assert_eq(spw_group_stats(gfd, ms, MEMBERS), MEMBERS);
	cr_expect_eq(ms[0].arrived, CONNS);
	cr_expect_eq(ms[0].spilled_out, CONNS - ENTRIES);
	cr_expect_eq(ms[0].delivered, ENTRIES);
	cr_expect_eq(ms[0].dropped, 0);
	for (unsigned i = 1; i < MEMBERS; i++) {
		cr_expect_eq(ms[i].spilled_in, ms[i].delivered);
		cr_expect_eq(ms[i].arrived, 0);
	}
	cr_expect_eq(ms[1].spilled_in + ms[2].spilled_in + ms[3].spilled_in,
		     CONNS - ENTRIES);

	for (unsigned i = 0; i < CONNS; i++)
		close(cfd[i]);
	for (unsigned i = 0; i < MEMBERS; i++) {
		spw_ring_exit(&ring[i]);
		close(lfd[i]);
	}
	close(gfd);
}

/*
 * The usual deployment: one port, SO_REUSEPORT, the kernel hashes
 * clients onto members. Member 0 never consumes; nothing is lost and
 * whatever hashed onto it beyond its ring arrives SPILLED elsewhere.
 */
Test(spill, reuseport_group_with_a_stalled_member, .timeout = 60)
{
	enum { CONNS = 48 };
	int lfd[MEMBERS], cfd[CONNS], gfd;
	struct spw_ring ring[MEMBERS];
	struct spw_member_stats ms[MEMBERS];
	unsigned got = 0;

	t_listeners(lfd, MEMBERS, true, 8);
	gfd = t_group(lfd, MEMBERS, 16);
	for (unsigned i = 0; i < MEMBERS; i++)
		t_ring(&ring[i], gfd, i);
	for (unsigned i = 0; i < CONNS; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	wait_arrived(gfd, CONNS);
	cr_assert_eq(spw_group_stats(gfd, ms, MEMBERS), MEMBERS);
	unsigned expect_spilled = ms[0].arrived > 16 ? ms[0].arrived - 16 : 0;

	for (unsigned i = 1; i < MEMBERS; i++)
		got += t_reap(&ring[i], CONNS, 1500, NULL);
	got += t_reap(&ring[0], CONNS, 1500, NULL);
	cr_expect_eq(got, (unsigned)CONNS);
	cr_assert_eq(spw_group_stats(gfd, ms, MEMBERS), MEMBERS);
	cr_expect_eq(ms[0].spilled_out, expect_spilled);
	cr_expect_eq(ms[0].dropped + ms[1].dropped + ms[2].dropped + ms[3].dropped, 0);
	for (unsigned i = 0; i < CONNS; i++)
		close(cfd[i]);
	for (unsigned i = 0; i < MEMBERS; i++) {
		spw_ring_exit(&ring[i]);
		close(lfd[i]);
	}
	close(gfd);
}

/*
 * Every ring full: each further arrival costs one connection of its member
 * an RST at once. The drop takes the member's oldest waiting connection
 * (O(1), see docs/architecture.md), so the reset may land on an earlier
 * client than the one that overflowed: count resets over all clients.
 */
Test(drop, all_rings_full_resets_promptly_and_counts, .timeout = 60)
{
	enum { CAP = 2 * 2, EXTRA = 5 };
	int lfd[2], cfd[CAP + EXTRA + 1], gfd;
	bool dead[CAP + EXTRA] = { false };
	struct spw_ring ring[2];
	struct spw_member_stats ms[2];
	unsigned resets = 0;

	t_listeners(lfd, 2, false, 8);
	gfd = t_group(lfd, 2, 2);
	for (unsigned i = 0; i < 2; i++)
		t_ring(&ring[i], gfd, i);
	/* nobody consumes: the first CAP fill both rings */
	for (unsigned i = 0; i < CAP; i++)
		cfd[i] = t_connect_id(t_port(lfd[i % 2]), i);
	wait_arrived(gfd, CAP);
	for (unsigned i = CAP; i < CAP + EXTRA; i++) {
		unsigned before = resets;
		long t0 = t_now_ms();

		/* the reset may even beat connect()'s return */
		cfd[i] = t_try_connect(t_port(lfd[0]));
		if (cfd[i] < 0) {
			dead[i] = true;
			resets++;
		}
		while (resets == before && t_now_ms() - t0 < 1000) {
			for (unsigned j = 0; j <= i; j++)
				if (!dead[j] && t_was_reset(cfd[j], 0)) {
					dead[j] = true;
					resets++;
				}
			usleep(2000);
		}
		cr_expect_eq(resets, before + 1, "arrival %u: no reset within 1 s", i);
	}
	cr_expect_eq(resets, (unsigned)EXTRA);
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].dropped, EXTRA);
	cr_expect_eq(ms[1].dropped, 0);
	cr_expect(ring[0].hdr->flags & SPW_RING_F_DROPPED);

	/* nobody else was reset; a worker consumes: service resumes at once */
	for (unsigned j = 0; j < CAP + EXTRA; j++)
		cr_expect(dead[j] || !t_was_reset(cfd[j], 0), "client %u reset too", j);
	cr_expect_eq(t_reap(&ring[0], 2, 3000, NULL), 2u);
	cfd[CAP + EXTRA] = t_connect_id(t_port(lfd[0]), 99);
	struct spw_cqe cqe;
	cr_assert_eq(t_reap(&ring[0], 1, 3000, &cqe), 1u);
	cr_expect_eq(t_read_id(cqe.fd), 99u);
	close(cqe.fd);
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].dropped, EXTRA, "no further drop after consuming");

	for (unsigned i = 0; i < CAP + EXTRA + 1; i++)
		if (cfd[i] >= 0)
			close(cfd[i]);
	for (unsigned i = 0; i < 2; i++) {
		spw_ring_exit(&ring[i]);
		close(lfd[i]);
	}
	close(gfd);
}

/* listen(fd, 1): the group raises the backlog so rings, not TCP, decide. */
Test(drop, tcp_backlog_is_never_the_limit, .timeout = 60)
{
	enum { CONNS = 64 };
	int lfd[2], cfd[CONNS], gfd;
	struct spw_ring ring[2];
	struct spw_member_stats ms[2];
	unsigned got;

	t_listeners(lfd, 2, false, 1);
	gfd = t_group(lfd, 2, 32);
	for (unsigned i = 0; i < 2; i++)
		t_ring(&ring[i], gfd, i);
	for (unsigned i = 0; i < CONNS; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	wait_arrived(gfd, CONNS);
	got = t_reap(&ring[0], CONNS, 3000, NULL) + t_reap(&ring[1], CONNS, 3000, NULL);
	cr_expect_eq(got, (unsigned)CONNS);
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].dropped, 0);
	cr_expect_eq(ms[0].delivered + ms[1].delivered, CONNS);
	for (unsigned i = 0; i < CONNS; i++)
		close(cfd[i]);
	for (unsigned i = 0; i < 2; i++) {
		spw_ring_exit(&ring[i]);
		close(lfd[i]);
	}
	close(gfd);
}
