/* SPDX-License-Identifier: MIT */
/*
 * test_stress: arrivals from several threads (so several CPUs' softirqs),
 * two threads entering the same ring, and groups torn down while clients
 * keep connecting. Every connection is delivered exactly once or, once the
 * group is gone, accepted the plain way; the runner fails the run on any
 * kernel warning.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "helpers.h"

#define MEMBERS 4
#define CLIENTS 4
#define PER_CLIENT 150
#define TOTAL (CLIENTS * PER_CLIENT)

static uint16_t port;
static atomic_uint delivered;
static atomic_uchar seen[TOTAL];
static atomic_bool stop;

#define RING_ENTRIES 16
/* in flight across all clients stays below the group's capacity */
#define WINDOW 12

static unsigned unanswered;

/*
 * Each client keeps WINDOW connections open and collects answers in
 * whatever order they come, so connections stuck on the ring nobody
 * consumes pile up there until it is full and the rest spill; the group
 * as a whole never runs out of room, so any drop is a bug.
 */
static void *client(void *arg)
{
	unsigned base = (unsigned)(uintptr_t)arg * PER_CLIENT;
	struct pollfd win[WINDOW];
	unsigned next = 0, active = 0;

	for (unsigned k = 0; k < WINDOW; k++)
		win[k] = (struct pollfd){ .fd = -1, .events = POLLIN };
	for (;;) {
		for (unsigned k = 0; k < WINDOW && next < PER_CLIENT; k++)
			if (win[k].fd < 0) {
				win[k].fd = t_connect_id(port, base + next++);
				active++;
			}
		if (!active)
			break;
		if (poll(win, WINDOW, 10000) <= 0) {
			__atomic_fetch_add(&unanswered, active, __ATOMIC_RELAXED);
			break;
		}
		for (unsigned k = 0; k < WINDOW; k++) {
			char ch;

			if (win[k].fd < 0 || !win[k].revents)
				continue;
			if (read(win[k].fd, &ch, 1) != 1)
				__atomic_fetch_add(&unanswered, 1, __ATOMIC_RELAXED);
			close(win[k].fd);
			win[k].fd = -1;
			active--;
		}
	}
	return NULL;
}

/*
 * Threads sharing one ring serialise the user-space side (peek + seen)
 * with their own lock, as with any shared queue; their enters run
 * concurrently in the kernel, which is what this exercises.
 */
struct consumer {
	struct spw_ring *ring;
	pthread_mutex_t *lock;
};

static void *consumer(void *arg)
{
	struct consumer *c = arg;
	struct __kernel_timespec ts = { .tv_nsec = 50 * 1000000 };

	while (!atomic_load(&stop)) {
		struct spw_cqe *cqe;
		int fd;

		pthread_mutex_lock(c->lock);
		if (spw_peek_cqe(c->ring, &cqe)) {
			pthread_mutex_unlock(c->lock);
			spw_enter(c->ring, 1, &ts);
			continue;
		}
		fd = cqe->fd;
		spw_cqe_seen(c->ring, cqe);
		pthread_mutex_unlock(c->lock);

		uint32_t id = t_read_id(fd);
		cr_assert_lt(id, (unsigned)TOTAL);
		atomic_fetch_add(&seen[id], 1);
		atomic_fetch_add(&delivered, 1);
		cr_assert_eq(write(fd, "k", 1), 1);
		close(fd);
	}
	return NULL;
}

Test(stress, many_cpus_many_threads_exactly_once, .timeout = 120)
{
	int lfd[MEMBERS], gfd;
	struct spw_ring ring[MEMBERS];
	pthread_t cl[CLIENTS], co[MEMBERS + 1];
	struct spw_group_stats st;

	struct rlimit rl = { 4096, 4096 };

	setrlimit(RLIMIT_NOFILE, &rl);
	t_listeners(lfd, MEMBERS, true, 16);
	port = t_port(lfd[0]);
	gfd = t_group_stall(lfd, MEMBERS, RING_ENTRIES, 0);
	for (unsigned i = 0; i < MEMBERS; i++)
		t_ring(&ring[i], gfd, i);
	/*
	 * Ring 0 has two consumer threads; ring 3 none for the first half
	 * second, so it fills and spills under load.
	 * CLIENTS * WINDOW < MEMBERS * RING_ENTRIES: nothing may be dropped.
	 */
	pthread_mutex_t lock[MEMBERS];
	struct consumer c[MEMBERS + 1];
	const unsigned which[MEMBERS + 1] = { 0, 0, 1, 2, 3 };

	for (unsigned i = 0; i < MEMBERS; i++)
		pthread_mutex_init(&lock[i], NULL);
	for (unsigned i = 0; i < MEMBERS + 1; i++)
		c[i] = (struct consumer){ &ring[which[i]], &lock[which[i]] };
	for (unsigned i = 0; i < MEMBERS; i++)
		pthread_create(&co[i], NULL, consumer, &c[i]);
	for (unsigned i = 0; i < CLIENTS; i++)
		pthread_create(&cl[i], NULL, client, (void *)(uintptr_t)i);
	/* ring 3 joins late: what waited there must still be served */
	usleep(500000);
	pthread_create(&co[MEMBERS], NULL, consumer, &c[MEMBERS]);
	for (unsigned i = 0; i < CLIENTS; i++)
		pthread_join(cl[i], NULL);
	/* every client got its one-byte answer: it was served */
	cr_expect_eq(unanswered, 0u);
	atomic_store(&stop, true);
	for (unsigned i = 0; i < MEMBERS + 1; i++)
		pthread_join(co[i], NULL);

	cr_expect_eq(atomic_load(&delivered), (unsigned)TOTAL);
	for (unsigned i = 0; i < TOTAL; i++)
		cr_expect_eq(atomic_load(&seen[i]), 1, "connection %u seen %u times",
			     i, atomic_load(&seen[i]));
	cr_assert_eq(spw_group_stats_full(gfd, &st, NULL, 0), MEMBERS);
	cr_expect_eq(st.total.arrived, TOTAL);
	cr_expect_eq(st.total.delivered, TOTAL);
	cr_expect_eq(st.total.dropped, 0);
	cr_expect_eq(st.total.spilled_out, st.total.spilled_in);
	cr_expect_gt(st.total.spilled_out, 0, "ring 3 stalled but nothing spilled");
	cr_log_info("stress: %llu spilled, %llu stale tokens",
		    (unsigned long long)st.total.spilled_out,
		    (unsigned long long)st.stale);
	for (unsigned i = 0; i < MEMBERS; i++) {
		spw_ring_exit(&ring[i]);
		close(lfd[i]);
	}
	close(gfd);
}

/* Clients that treat a reset as an answer too: teardown may drop. */
static void *hammer(void *arg)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	/* a full queue drops SYNs; don't sit out TCP's retransmit back-off */
	struct timeval tv = { .tv_usec = 200000 };
	unsigned *ok = arg;

	while (!atomic_load(&stop)) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (!connect(fd, (void *)&sin, sizeof(sin)))
			(*ok)++;
		close(fd);
	}
	return NULL;
}

Test(stress, group_closed_while_connections_arrive, .timeout = 120)
{
	int lfd[2];
	pthread_t h[2];
	unsigned ok[2] = { 0, 0 };

	t_listeners(lfd, 2, true, 64);
	port = t_port(lfd[0]);
	for (unsigned i = 0; i < 2; i++)
		fcntl(lfd[i], F_SETFL, O_NONBLOCK);
	atomic_store(&stop, false);
	for (unsigned i = 0; i < 2; i++)
		pthread_create(&h[i], NULL, hammer, &ok[i]);
	for (unsigned round = 0; round < 30; round++) {
		struct spw_ring ring;
		int gfd = t_group_stall(lfd, 2, 4, 0);

		t_ring(&ring, gfd, round % 2);
		t_reap(&ring, 4, 20, NULL);
		if (round % 3 == 0)
			spw_ring_exit(&ring);
		close(gfd);
		if (round % 3)
			spw_ring_exit(&ring);
		/* plain accept drains whatever the group left behind */
		for (unsigned i = 0; i < 2; i++) {
			int a;

			while ((a = accept(lfd[i], NULL, NULL)) >= 0)
				close(a);
		}
	}
	atomic_store(&stop, true);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(h[i], NULL);
	cr_expect_gt(ok[0] + ok[1], 30u, "the clients hardly got through");
	cr_log_info("teardown stress: %u connections", ok[0] + ok[1]);
	for (unsigned i = 0; i < 2; i++)
		close(lfd[i]);
}
