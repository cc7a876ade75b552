/* SPDX-License-Identifier: MIT */
/*
 * test_sole: tests that need the guest to themselves, so run-each runs
 * this binary with one job: they switch on machine-wide fault injection
 * (any socket created meanwhile would fail), or count acquisitions of the
 * group lock class (another test's groups would add to the count).
 *
 *  - teardown: a drop the work could not carry out (no memory) is retried
 *    100 ms later; closing the group in between must not free it with the
 *    retry's timer armed (a use-after-free, in module text after rmmod).
 *  - poll: an idle event loop's polls of the ring do not take the group
 *    lock each time.
 *  - rehome: a ring's waiting connections move to a sibling with the group
 *    lock (bottom halves off) dropped every SPW_BATCH of them.
 *  - hot path: an arrival takes no group-wide lock, and an enter takes its
 *    ring's lock a few times per batch, not per connection.
 *
 * Fault injection and lock statistics exist on the debug kernels only;
 * elsewhere these tests skip.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

#define FAILSLAB "/sys/kernel/debug/failslab/"
#define GROUP_LOCK "&g->lock"
#define RING_LOCK "&r->lock"

static void wait_stats(int gfd, unsigned m, unsigned pending, unsigned dropping)
{
	struct spw_member_stats ms[4];
	struct spw_group_stats st;

	for (long end = t_now_ms() + 10000; t_now_ms() < end; usleep(5000)) {
		cr_assert_gt(spw_group_stats_full(gfd, &st, ms, 4), (int)m);
		if (ms[m].pending == pending && st.dropping == dropping)
			return;
	}
	cr_assert_fail("member %u: %u pending, %llu dropping; want %u, %u", m,
		       ms[m].pending, (unsigned long long)st.dropping, pending, dropping);
}

/* Acquisitions of lock class @name since the reset; 0 when it was not taken. */
static long acquisitions(const char *name)
{
	long n = t_lock_acquisitions(name);

	return n < 0 ? 0 : n;
}

static int live_groups(void)
{
	FILE *f = fopen("/sys/module/spillway/parameters/live_groups", "r");
	int n = -1;

	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%d", &n), 1);
	fclose(f);
	return n;
}

static int socket_fd(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	return fd;
}

static void connect_to(int fd, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	cr_assert_eq(connect(fd, (void *)&sin, sizeof(sin)), 0, "connect: %s",
		     strerror(errno));
}

/*
 * The drop work retries a failed reset 100 ms later. Here every new
 * socket fails (failslab on the socket inode cache, which the debug
 * guests mark at boot: tests/vm/run), so the drop work's accept fails
 * with -ENOMEM and re-arms; the group closes at once. Before the fix the
 * group was freed with that timer armed: debugobjects reports freeing an
 * active timer, KASAN the timer's use of freed memory, and after rmmod
 * the work would run in freed text. Now teardown neither leaves it armed
 * nor loses the connections: the drops not carried out leave them queued
 * on the listener, for its accept().
 */
Test(teardown, a_drop_retry_does_not_outlive_its_group, .timeout = 60)
{
	struct spw_group_params p = { .ring_entries = 1, .stall_ms = SPW_STALL_OFF };
	int lfd, gfd, c[3], got = 0;
	char val[8] = "";
	struct spw_ring ring;
	FILE *f;

	f = fopen("/sys/kernel/slab/sock_inode_cache/failslab", "r");
	if (access(FAILSLAB "cache-filter", W_OK) || !f || !fgets(val, sizeof(val), f) ||
	    val[0] != '1')
		cr_skip_test("no failslab cache filter on the socket inode cache here");
	fclose(f);

	lfd = t_listener(AF_INET, 0, false, 16);
	gfd = spw_group_create(&lfd, 1, &p);
	cr_assert_geq(gfd, 0);
	t_ring(&ring, gfd, 0);
	for (unsigned i = 0; i < 3; i++)
		c[i] = socket_fd();	/* before any socket can fail */
	connect_to(c[0], t_port(lfd));
	wait_stats(gfd, 0, 1, 0);	/* the ring's one slot */

	t_write_file(FAILSLAB "cache-filter", "Y");
	t_write_file(FAILSLAB "ignore-gfp-wait", "N");
	t_write_file(FAILSLAB "verbose", "0");
	t_write_file(FAILSLAB "interval", "1");
	t_write_file(FAILSLAB "times", "-1");
	t_write_file(FAILSLAB "probability", "100");
	connect_to(c[1], t_port(lfd));
	connect_to(c[2], t_port(lfd));
	wait_stats(gfd, 0, 1, 2);	/* two drops decided, none carried out */
	usleep(30000);			/* the work has run, failed and re-armed */
	spw_ring_exit(&ring);
	close(gfd);			/* within the 100 ms */
	t_write_file(FAILSLAB "probability", "0");
	t_write_file(FAILSLAB "cache-filter", "N");

	usleep(300000);			/* past the retry: it must not run */
	cr_expect_eq(live_groups(), 0, "the group was not freed");
	/* nothing lost: the three wait in the listener's queue */
	while (got < 3 && poll(&(struct pollfd){ .fd = lfd, .events = POLLIN }, 1, 2000) == 1) {
		int a = accept(lfd, NULL, NULL);

		cr_assert_geq(a, 0, "accept: %s", strerror(errno));
		close(a);
		got++;
	}
	cr_expect_eq(got, 3, "%d of 3 connections left on the listener", got);
	for (unsigned i = 0; i < 3; i++)
		close(c[i]);
	close(lfd);
}

/* A poll of an idle ring, which finds nothing. */
static void idle_poll(struct spw_ring *ring)
{
	cr_assert_eq(poll(&(struct pollfd){ .fd = ring->ring_fd, .events = POLLIN }, 1, 0), 0);
}

/* An enter that waits for nothing on an idle ring, which finds nothing. */
static void idle_enter(struct spw_ring *ring)
{
	cr_assert_eq(spw_enter(ring, 0, NULL), 0);
}

/*
 * 2000 @call()s (@what) on an idle ring of a fresh group take the group
 * and ring locks at most once a jiffy (a millisecond at most).
 */
static void expect_idle_calls_lock_rarely(const char *what, void (*call)(struct spw_ring *))
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	struct spw_ring ring;
	long acq, t0, ms;

	t_ring(&ring, gfd, 0);
	if (!t_lock_stat_reset())
		cr_skip_test("no lock statistics (CONFIG_LOCK_STAT) here");
	t0 = t_now_ms();
	for (unsigned i = 0; i < 2000; i++)
		call(&ring);
	ms = t_now_ms() - t0;
	acq = acquisitions(GROUP_LOCK) + acquisitions(RING_LOCK);
	cr_log_info("2000 %s in %ld ms took the group and ring locks %ld times", what, ms, acq);
	cr_expect_lt(acq, 1000, "2000 idle %s took the group and ring locks %ld times", what, acq);
	cr_expect_leq(acq, ms + 10, "%ld acquisitions in %ld ms: more than one a jiffy",
		      acq, ms);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

/*
 * An event loop polls its ring fd whenever it waits; ->poll marks the
 * consumer responsive and used to take the group lock on every call.
 * Now a poll that would change nothing (already marked in this jiffy,
 * nothing waiting) takes no lock: 2000 idle polls take it at most once a
 * jiffy, not 2000 times.
 */
Test(poll, idle_polls_do_not_take_a_lock_each, .timeout = 60)
{
	expect_idle_calls_lock_rarely("polls", idle_poll);
}

/*
 * An enter that finds nothing (min_complete 0: a consumer that checks
 * between other work) took its ring's lock twice, for the touch and to
 * look at an empty FIFO. Now it takes none when the consumer was already
 * here in this jiffy and nothing waits: 2000 such enters take the ring
 * lock at most once a jiffy, not 4000 times.
 */
Test(enter, idle_enters_do_not_take_a_lock_each, .timeout = 60)
{
	expect_idle_calls_lock_rarely("enters", idle_enter);
}

/*
 * A ring closes with N connections waiting for it; they move to the
 * sibling. The group lock keeps bottom halves off on its CPU while held,
 * and a ring may hold SPW_MAX_RING_ENTRIES of them: the move drops the
 * lock every SPW_BATCH (64) tokens, so it takes the lock at least N / 64
 * times where it used to take it once. None is lost on the way.
 */
Test(rehome, a_closing_ring_drops_the_lock_every_batch, .timeout = 300)
{
	enum { N = 1024 };
	struct rlimit rl = { .rlim_cur = 4096, .rlim_max = 4096 };
	int lfd[2], gfd, *cfd;
	struct spw_member_stats ms[2];
	struct spw_ring ring[2];
	long acq;

	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	cfd = calloc(N, sizeof(*cfd));
	cr_assert_not_null(cfd);
	lfd[0] = t_listener(AF_INET, 0, false, 2 * N);
	lfd[1] = t_listener(AF_INET, 0, false, 2 * N);
	gfd = t_group(lfd, 2, N);
	t_ring(&ring[0], gfd, 0);
	t_ring(&ring[1], gfd, 1);
	for (unsigned i = 0; i < N; i++)
		cfd[i] = t_connect(AF_INET, t_port(lfd[0]));
	wait_stats(gfd, 0, N, 0);
	if (!t_lock_stat_reset())
		cr_skip_test("no lock statistics (CONFIG_LOCK_STAT) here");
	spw_ring_exit(&ring[0]);	/* all N move to ring 1 */
	acq = t_lock_acquisitions(GROUP_LOCK);
	cr_log_info("moving %d tokens took the group lock %ld times, longest hold %.2f us",
		    N, acq, t_lock_holdtime_max(GROUP_LOCK));
	cr_expect_geq(acq, N / 64, "moving %d tokens took the group lock only %ld times",
		      N, acq);
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[1].pending, (unsigned)N, "%u of %d moved", ms[1].pending, N);
	cr_expect_eq(ms[0].rehomed, (unsigned long long)N);
	cr_expect_eq(ms[0].dropped + ms[1].dropped, 0u);
	for (unsigned i = 0; i < N; i++)
		close(cfd[i]);
	free(cfd);
	spw_ring_exit(&ring[1]);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}

/*
 * The arrival path: a connection is placed under its listener's lock and
 * the target ring's, never the group lock (which every member's arrivals
 * would share, as SO_REUSEPORT's listeners share nothing). Two members,
 * their rings open and not entered: N arrivals, each placed.
 */
Test(hotpath, arrivals_take_no_group_lock, .timeout = 120)
{
	enum { N = 200, ENTRIES = 256 };
	int lfd[2], gfd, cfd[N];
	struct spw_member_stats ms[2];
	struct spw_ring ring[2];
	long acq, racq;

	lfd[0] = t_listener(AF_INET, 0, false, N);
	lfd[1] = t_listener(AF_INET, 0, false, N);
	gfd = t_group(lfd, 2, ENTRIES);
	t_ring(&ring[0], gfd, 0);
	t_ring(&ring[1], gfd, 1);
	if (!t_lock_stat_reset())
		cr_skip_test("no lock statistics (CONFIG_LOCK_STAT) here");
	for (unsigned i = 0; i < N; i++)
		cfd[i] = t_connect(AF_INET, t_port(lfd[i % 2]));
	wait_stats(gfd, 0, N / 2, 0);
	wait_stats(gfd, 1, N / 2, 0);
	acq = acquisitions(GROUP_LOCK);
	racq = acquisitions(RING_LOCK);
	cr_log_info("%d arrivals took the group lock %ld times, the ring locks %ld times",
		    N, acq, racq);
	cr_expect_leq(acq, N / 10, "%d arrivals took the group lock %ld times", N, acq);
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].arrived + ms[1].arrived, (unsigned long long)N);
	for (unsigned i = 0; i < N; i++)
		close(cfd[i]);
	spw_ring_exit(&ring[0]);
	spw_ring_exit(&ring[1]);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}

/*
 * The enter: N connections wait on the ring; one enter hands all of them
 * over. It takes the ring's lock a few times per batch of SPW_BATCH (64),
 * and the group lock not at all, where it took the group lock three
 * times per connection.
 */
Test(hotpath, an_enter_takes_its_ring_lock_per_batch, .timeout = 120)
{
	enum { N = 128 };
	int lfd, gfd, cfd[N];
	struct spw_ring ring;
	long acq, racq;
	unsigned seen;

	lfd = t_listener(AF_INET, 0, false, N);
	gfd = t_group(&lfd, 1, N);
	t_ring(&ring, gfd, 0);
	for (unsigned i = 0; i < N; i++)
		cfd[i] = t_connect(AF_INET, t_port(lfd));
	wait_stats(gfd, 0, N, 0);
	if (!t_lock_stat_reset())
		cr_skip_test("no lock statistics (CONFIG_LOCK_STAT) here");
	cr_assert_eq(spw_enter(&ring, N, NULL), N);
	acq = acquisitions(GROUP_LOCK);
	racq = acquisitions(RING_LOCK);
	cr_log_info("handing over %d connections took the group lock %ld times, the ring lock %ld times",
		    N, acq, racq);
	cr_expect_leq(acq + racq, 4 * (N / 64) + 4,
		      "an enter of %d took the group lock %ld and the ring lock %ld times",
		      N, acq, racq);
	seen = t_drain(&ring);
	cr_expect_eq(seen, (unsigned)N);
	for (unsigned i = 0; i < N; i++)
		close(cfd[i]);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}
