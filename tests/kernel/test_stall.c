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
