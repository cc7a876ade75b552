/* SPDX-License-Identifier: MIT */
/*
 * test_stall: no connection waits behind a stuck worker. A worker that
 * stops entering (SIGSTOP here) loses new connections to responsive
 * siblings, and the connections already waiting for it are taken by an
 * idle sibling within about the stall time. With SPW_STALL_OFF the
 * group spills only on a full ring, exactly as the claims say.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define CONNS 5

struct reaper {
	struct spw_ring *ring;
	unsigned want;
	int ms;
	struct spw_cqe cqe[CONNS];
	unsigned got;
	long took_ms;
};

static void *reap_thread(void *arg)
{
	struct reaper *r = arg;
	long t0 = t_now_ms();

	r->got = t_reap(r->ring, r->want, r->ms, r->cqe);
	r->took_ms = t_now_ms() - t0;
	return NULL;
}

/* A worker that serves its ring until killed. */
static pid_t start_worker(int gfd, unsigned member)
{
	pid_t pid = fork();

	if (!pid) {
		struct spw_ring ring;
		int rfd = spw_ring_open(gfd, member);

		if (rfd < 0 || spw_ring_init(&ring, rfd))
			_exit(2);
		for (;;) {
			struct spw_cqe *cqe;

			if (spw_wait_cqe(&ring, &cqe))
				continue;
			close(cqe->fd);
			spw_cqe_seen(&ring, cqe);
		}
	}
	return pid;
}

Test(stall, stopped_workers_connections_go_to_an_idle_sibling, .timeout = 60)
{
	int lfd[2], cfd[CONNS], gfd, status;
	struct spw_member_stats ms[2];
	struct spw_ring sibling;
	struct reaper r = { .ring = &sibling, .want = CONNS, .ms = 3000 };
	pthread_t th;
	pid_t worker;

	t_listeners(lfd, 2, false, 16);
	gfd = t_group_stall(lfd, 2, 16, 20);
	worker = start_worker(gfd, 0);
	t_ring(&sibling, gfd, 1);
	/* the worker serves, then is stopped */
	int c = t_connect_id(t_port(lfd[0]), 100);
	for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(5000)) {
		spw_group_stats(gfd, ms, 2);
		if (ms[0].delivered == 1)
			break;
	}
	cr_assert_eq(ms[0].delivered, 1);
	close(c);
	kill(worker, SIGSTOP);

	pthread_create(&th, NULL, reap_thread, &r);
	usleep(50000);
	for (unsigned i = 0; i < CONNS; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	pthread_join(th, NULL);

	cr_expect_eq(r.got, (unsigned)CONNS, "sibling got %u in %ld ms", r.got, r.took_ms);
	cr_expect_lt(r.took_ms, 1000, "took %ld ms", r.took_ms);
	for (unsigned i = 0; i < r.got; i++) {
		cr_expect_eq(r.cqe[i].origin, 0u);
		cr_expect(r.cqe[i].flags & SPW_CQE_F_SPILLED);
		cr_expect_lt(t_read_id(r.cqe[i].fd), (unsigned)CONNS);
		close(r.cqe[i].fd);
	}
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].spilled_out, CONNS);
	cr_expect_eq(ms[1].spilled_in, CONNS);
	cr_expect_eq(ms[0].dropped + ms[1].dropped, 0);

	kill(worker, SIGKILL);
	waitpid(worker, &status, 0);
	for (unsigned i = 0; i < CONNS; i++)
		close(cfd[i]);
	spw_ring_exit(&sibling);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}

/*
 * Work already queued for a worker that then stops entering is taken by
 * the idle sibling once the stall time passes (the group's stall timer
 * wakes it).
 */
Test(stall, waiting_connections_are_stolen_from_a_stalled_ring, .timeout = 60)
{
	int lfd[2], cfd[CONNS], gfd;
	struct spw_member_stats ms[2];
	struct spw_ring own, sibling;
	struct reaper r = { .ring = &sibling, .want = CONNS, .ms = 3000 };
	pthread_t th;

	t_listeners(lfd, 2, false, 16);
	gfd = t_group_stall(lfd, 2, 16, 100);
	t_ring(&own, gfd, 0);
	t_ring(&sibling, gfd, 1);
	/* member 0's consumer was just here: new work is queued for it */
	cr_assert_geq(spw_enter(&own, 0, NULL), 0);
	for (unsigned i = 0; i < CONNS; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	spw_group_stats(gfd, ms, 2);
	cr_log_info("queued on the soon-stalled ring: %u of %d", ms[0].pending, CONNS);

	pthread_create(&th, NULL, reap_thread, &r);
	pthread_join(th, NULL);
	cr_expect_eq(r.got, (unsigned)CONNS);
	cr_expect_lt(r.took_ms, 1000, "took %ld ms", r.took_ms);
	for (unsigned i = 0; i < r.got; i++)
		close(r.cqe[i].fd);
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].delivered, 0);
	cr_expect_eq(ms[0].spilled_out, CONNS);
	cr_expect_eq(ms[0].pending, 0u);

	for (unsigned i = 0; i < CONNS; i++)
		close(cfd[i]);
	spw_ring_exit(&own);
	spw_ring_exit(&sibling);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}

Test(stall, stall_off_spills_only_on_a_full_ring, .timeout = 60)
{
	int lfd[2], cfd[CONNS], gfd;
	struct spw_ring own, sibling;

	t_listeners(lfd, 2, false, 16);
	gfd = t_group_stall(lfd, 2, 16, SPW_STALL_OFF);
	t_ring(&own, gfd, 0);
	t_ring(&sibling, gfd, 1);
	for (unsigned i = 0; i < CONNS; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	/* the idle sibling gets nothing: ring 0 has room */
	cr_expect_eq(t_reap(&sibling, 1, 300, NULL), 0u);
	cr_expect_eq(t_reap(&own, CONNS, 3000, NULL), (unsigned)CONNS);
	for (unsigned i = 0; i < CONNS; i++)
		close(cfd[i]);
	spw_ring_exit(&own);
	spw_ring_exit(&sibling);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}

Test(stall, stall_time_is_validated)
{
	int lfd = t_listener(AF_INET, 0, false, 8);
	struct spw_group_params p = { .stall_ms = 3600 * 1000 + 1 };

	cr_expect_eq(spw_group_create(&lfd, 1, &p), -EINVAL);
	close(lfd);
}

/*
 * SPW_STALL_OFF, and a member whose ring nobody ever opens. A ring that
 * was never opened has no consumer, but counted as live and responsive:
 * P2C and LEAST sent the other member's connections to it (it was the
 * least loaded), and with stall detection off nothing ever took them.
 * Now it takes a sibling's work only when no ring with a consumer can:
 * every connection of member 0 reaches member 0's consumer.
 */
static void no_sibling_work_for_a_ring_nobody_opened(unsigned policy)
{
	int lfd[2], cfd[2 * CONNS], gfd;
	struct spw_member_stats ms[2];
	struct spw_ring own;
	unsigned got;

	t_listeners(lfd, 2, false, 16);
	gfd = t_group_policy(lfd, 2, 16, SPW_STALL_OFF, policy, 0);
	t_ring(&own, gfd, 0);
	for (unsigned i = 0; i < 2 * CONNS; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	got = t_reap(&own, 2 * CONNS, 3000, NULL);
	cr_expect_eq(got, 2u * CONNS, "%u of %u reached the only consumer", got, 2 * CONNS);
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[1].pending, 0u, "%u wait on the ring nobody opened", ms[1].pending);
	cr_expect_eq(ms[1].state, (unsigned)SPW_MEMBER_NEW);
	for (unsigned i = 0; i < 2 * CONNS; i++)
		close(cfd[i]);
	spw_ring_exit(&own);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}

Test(stall, stall_off_p2c_strands_nothing_on_a_ring_nobody_opened, .timeout = 60)
{
	no_sibling_work_for_a_ring_nobody_opened(SPW_POLICY_P2C);
}

Test(stall, stall_off_least_strands_nothing_on_a_ring_nobody_opened, .timeout = 60)
{
	no_sibling_work_for_a_ring_nobody_opened(SPW_POLICY_LEAST);
}

/*
 * A sibling takes every connection waiting behind a stopped consumer:
 * the stalled ring's header must stop saying that work waits for an
 * enter there (SPW_RING_F_WORK_PENDING), as it does when the ring's own
 * consumer takes them. The steal left the flag set.
 */
Test(stall, a_ring_robbed_of_its_work_shows_none_pending, .timeout = 60)
{
	int lfd[2], cfd[CONNS], gfd;
	struct spw_ring stuck, idle;
	unsigned got;

	t_listeners(lfd, 2, false, 16);
	gfd = t_group_stall(lfd, 2, 16, 20);
	t_ring(&stuck, gfd, 0);		/* opened, never entered */
	t_ring(&idle, gfd, 1);
	for (unsigned i = 0; i < CONNS; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	for (long end = t_now_ms() + 2000; t_now_ms() < end; usleep(2000))
		if (__atomic_load_n(stuck.kflags, __ATOMIC_ACQUIRE) & SPW_RING_F_WORK_PENDING)
			break;
	cr_assert(*stuck.kflags & SPW_RING_F_WORK_PENDING, "work never showed as pending");
	got = t_reap(&idle, CONNS, 3000, NULL);
	cr_assert_eq(got, (unsigned)CONNS, "the idle sibling took %u of %u", got, CONNS);
	cr_expect_eq(__atomic_load_n(stuck.kflags, __ATOMIC_ACQUIRE) & SPW_RING_F_WORK_PENDING,
		     0u, "the robbed ring still shows work pending");
	for (unsigned i = 0; i < CONNS; i++)
		close(cfd[i]);
	spw_ring_exit(&stuck);
	spw_ring_exit(&idle);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}
