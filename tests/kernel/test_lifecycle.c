/* SPDX-License-Identifier: MIT */
/*
 * test_lifecycle: group and ring fds cross fork() and SCM_RIGHTS; a
 * ring whose last fd closes hands its waiting connections to siblings,
 * or keeps them for a replacement when no sibling is left;
 * closing the group gives the listeners back to plain accept(), also when
 * the unix GC closes it; nothing leaks (TCP sockets in use return to
 * where they were).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static void wait_pending(int gfd, unsigned m, unsigned n)
{
	struct spw_member_stats ms[8];

	for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(5000)) {
		cr_assert_gt(spw_group_stats(gfd, ms, 8), (int)m);
		if (ms[m].pending == n)
			return;
	}
	cr_assert_fail("member %u: %u pending, want %u", m, ms[m].pending, n);
}

Test(lifecycle, forked_worker_consumes_its_ring)
{
	int lfd = t_listener(AF_INET, 0, false, 8);
	int gfd = t_group(&lfd, 1, 8);
	int cfd, status;
	pid_t pid;

	pid = fork();
	if (!pid) {
		/* the worker: inherited group fd, opens its own ring */
		struct spw_ring ring;
		int rfd = spw_ring_open(gfd, 0);
		struct spw_cqe cqe;

		if (rfd < 0 || spw_ring_init(&ring, rfd))
			_exit(2);
		if (t_reap(&ring, 1, 5000, &cqe) != 1)
			_exit(3);
		_exit(write(cqe.fd, "w", 1) == 1 ? 0 : 4);
	}
	usleep(100000);
	cfd = t_connect(AF_INET, t_port(lfd));
	waitpid(pid, &status, 0);
	cr_expect_eq(WEXITSTATUS(status), 0);
	char c = 0;
	cr_expect_eq(read(cfd, &c, 1), 1);
	cr_expect_eq(c, 'w');
	close(cfd);
	close(gfd);
	close(lfd);
}

static void send_fd(int sock, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = "x", .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	cr_assert_eq(sendmsg(sock, &mh, 0), 1);
}

static int recv_fd(int sock)
{
	char cbuf[CMSG_SPACE(sizeof(int))], b;
	struct iovec iov = { .iov_base = &b, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	int fd;

	if (recvmsg(sock, &mh, 0) != 1 || !CMSG_FIRSTHDR(&mh))
		return -1;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(int));
	return fd;
}

Test(lifecycle, ring_fd_passed_with_scm_rights)
{
	int lfd = t_listener(AF_INET, 0, false, 8);
	int gfd = t_group(&lfd, 1, 8);
	int sv[2], cfd, status, rfd;
	pid_t pid;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	if (!pid) {
		struct spw_ring ring;
		struct spw_cqe cqe;
		int fd;

		close(gfd);	/* only the passed ring fd, nothing inherited */
		fd = recv_fd(sv[1]);
		if (fd < 0 || spw_ring_init(&ring, fd))
			_exit(2);
		if (t_reap(&ring, 1, 5000, &cqe) != 1)
			_exit(3);
		_exit(t_read_id(cqe.fd) == 42 ? 0 : 4);
	}
	rfd = spw_ring_open(gfd, 0);
	cr_assert_geq(rfd, 0);
	send_fd(sv[0], rfd);
	close(rfd);
	close(gfd);	/* the child's ring fd keeps the group alive */
	cfd = t_connect_id(t_port(lfd), 42);
	waitpid(pid, &status, 0);
	cr_expect_eq(WEXITSTATUS(status), 0);
	close(cfd);
	close(lfd);
}

/*
 * A group fd in flight inside an SCM_RIGHTS cycle nobody can reach: only
 * the kernel's unix garbage collector can free it, and the GC runs when
 * some unix socket is released while fds are in flight (here: sp[1]'s
 * close). The GC worker drops the last reference, so the group's release
 * runs in a kworker (delayed fput), not in a process closing an fd. It
 * must free the group, give the listener back, and leave the connection
 * that waited for the (never opened) ring in the accept queue.
 */
Test(lifecycle, group_in_an_scm_cycle_is_freed_by_the_unix_gc, .timeout = 60)
{
	struct spw_group_params p = { .ring_entries = 4, .stall_ms = SPW_STALL_OFF };
	int lfd = t_listener(AF_INET, 0, false, 8);
	int gfd = t_group(&lfd, 1, 4);
	int sp[2], cfd, g = -1, afd;

	cfd = t_connect_id(t_port(lfd), 7);
	wait_pending(gfd, 0, 1);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sp), 0);
	/* both land in sp[0]'s queue: sp[0] holds itself and the group */
	send_fd(sp[1], sp[0]);
	send_fd(sp[1], gfd);
	close(gfd);
	close(sp[0]);
	close(sp[1]);	/* a unix socket released with fds in flight: GC */
	for (long end = t_now_ms() + 10000; t_now_ms() < end; usleep(20000)) {
		g = spw_group_create(&lfd, 1, &p);
		if (g >= 0)
			break;
		cr_assert_eq(g, -EBUSY, "create on the cycle's listener: %s", strerror(-g));
	}
	cr_assert_geq(g, 0, "the group in the cycle was not freed in 10 s");
	close(g);
	/* the connection that waited in the module is still queued */
	cr_assert_eq(poll(&(struct pollfd){ .fd = lfd, .events = POLLIN }, 1, 5000), 1,
		     "the waiting connection is gone");
	afd = accept(lfd, NULL, NULL);
	cr_assert_geq(afd, 0);
	cr_expect_eq(t_read_id(afd), 7u);
	close(afd);
	close(cfd);
	close(lfd);
}

/*
 * A worker dies with connections waiting for it in the kernel: they move
 * to the sibling, they are not reset. A replacement reopens the ring.
 */
Test(lifecycle, dead_workers_connections_move_to_siblings, .timeout = 60)
{
	int lfd[2], cfd[4], gfd, status;
	struct spw_member_stats ms[2];
	struct spw_ring sibling, again;
	struct spw_cqe cqe[4];
	pid_t pid;

	t_listeners(lfd, 2, false, 8);
	gfd = t_group(lfd, 2, 8);
	t_ring(&sibling, gfd, 1);
	pid = fork();
	if (!pid) {
		struct spw_ring ring;
		int rfd = spw_ring_open(gfd, 0);

		if (rfd < 0 || spw_ring_init(&ring, rfd))
			_exit(2);
		pause();	/* a stuck worker, never enters */
		_exit(0);
	}
	for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(5000)) {
		spw_group_stats(gfd, ms, 2);
		if (ms[0].state == SPW_MEMBER_OPEN)
			break;
	}
	cr_assert_eq(ms[0].state, SPW_MEMBER_OPEN);
	for (unsigned i = 0; i < 4; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	wait_pending(gfd, 0, 4);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);

	cr_assert_eq(t_reap(&sibling, 4, 5000, cqe), 4u);
	for (unsigned i = 0; i < 4; i++) {
		cr_expect_eq(cqe[i].origin, 0u);
		cr_expect(cqe[i].flags & SPW_CQE_F_SPILLED);
		cr_expect_lt(t_read_id(cqe[i].fd), 4u);
		close(cqe[i].fd);
	}
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].state, (unsigned)SPW_MEMBER_CLOSED);
	cr_expect_eq(ms[0].rehomed, 4);
	cr_expect_eq(ms[0].dropped, 0);

	/* while closed it takes no work: arrivals go to the sibling */
	int c2 = t_connect_id(t_port(lfd[0]), 7);
	cr_expect_eq(t_reap(&sibling, 1, 5000, NULL), 1u);
	close(c2);
	/* a replacement worker takes the member over */
	t_ring(&again, gfd, 0);
	c2 = t_connect_id(t_port(lfd[0]), 8);
	cr_assert_eq(t_reap(&again, 1, 5000, cqe), 1u);
	cr_expect_eq(cqe[0].flags, 0u);
	close(cqe[0].fd);
	close(c2);

	for (unsigned i = 0; i < 4; i++)
		close(cfd[i]);
	spw_ring_exit(&again);
	spw_ring_exit(&sibling);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}

/* A worker of member @m that opens its ring and never enters; its pid. */
static pid_t stuck_worker(int gfd, unsigned m)
{
	struct spw_member_stats ms[8];
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (!pid) {
		struct spw_ring ring;
		int rfd = spw_ring_open(gfd, m);

		if (rfd < 0 || spw_ring_init(&ring, rfd))
			_exit(2);
		pause();
		_exit(0);
	}
	for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(5000)) {
		cr_assert_gt(spw_group_stats(gfd, ms, 8), (int)m);
		if (ms[m].state == SPW_MEMBER_OPEN)
			return pid;
	}
	cr_assert_fail("member %u's ring never opened", m);
	return -1;
}

/*
 * Every worker of a live group is gone: a one-worker daemon restarting,
 * or a master replacing all its workers at once. With no sibling to take
 * them, the connections waiting for the last ring wait for a replacement,
 * as they would in a plain listener's queue: none is reset. Returns with
 * member 0 VACANT, holding the three connections @cfd (ids 0-2) of
 * lfd[0]; member 1's ring was opened and closed before.
 */
static void vacate_both(int gfd, const int *lfd, int *cfd)
{
	struct spw_member_stats ms[2];
	struct spw_ring first;
	int status;
	pid_t pid;

	pid = stuck_worker(gfd, 0);
	t_ring(&first, gfd, 1);		/* after the fork: the child has no copy */
	for (unsigned i = 0; i < 3; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	wait_pending(gfd, 0, 3);
	spw_ring_exit(&first);		/* member 1's worker goes first */
	kill(pid, SIGKILL);		/* then the last one */
	waitpid(pid, &status, 0);

	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[1].state, (unsigned)SPW_MEMBER_CLOSED);
	cr_expect_eq(ms[0].state, (unsigned)SPW_MEMBER_VACANT);
	cr_expect_eq(ms[0].pending, 3u);
	cr_expect_eq(ms[0].dropped + ms[1].dropped, 0u);
	for (unsigned i = 0; i < 3; i++)
		cr_expect_not(t_was_reset(cfd[i], 300), "client %u was reset", i);
}

/* Close what a vacancy test made: clients, the serving ring, group, listeners. */
static void end_vacancy_test(struct spw_ring *r, int gfd, const int *lfd,
			     const int *cfd, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(cfd[i]);
	spw_ring_exit(r);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}

Test(lifecycle, last_workers_connections_wait_for_a_replacement, .timeout = 60)
{
	int lfd[2], cfd[4], gfd;
	struct spw_member_stats ms[2];
	struct spw_cqe cqe[4];
	struct spw_ring again;
	unsigned seen = 0;

	t_listeners(lfd, 2, false, 8);
	gfd = t_group(lfd, 2, 8);
	vacate_both(gfd, lfd, cfd);
	/* arrivals meanwhile wait too, whichever member they reach */
	cfd[3] = t_connect_id(t_port(lfd[1]), 3);
	wait_pending(gfd, 0, 4);

	/* the replacement serves all four */
	t_ring(&again, gfd, 0);
	cr_assert_eq(t_reap(&again, 4, 5000, cqe), 4u);
	for (unsigned i = 0; i < 4; i++) {
		uint32_t id = t_read_id(cqe[i].fd);

		cr_expect_lt(id, 4u);
		if (id < 4)
			seen |= 1u << id;
		close(cqe[i].fd);
	}
	cr_expect_eq(seen, 0xfu, "ids seen: %#x", seen);
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].state, (unsigned)SPW_MEMBER_OPEN);
	cr_expect_eq(ms[0].dropped + ms[1].dropped, 0u);

	end_vacancy_test(&again, gfd, lfd, cfd, 4);
}

/*
 * A vacant member that no worker takes over: the first worker of another
 * member takes its waiting connections when it opens its ring (stall
 * detection is off: no stall time is involved).
 */
Test(lifecycle, vacant_members_connections_go_to_the_next_worker, .timeout = 60)
{
	int lfd[2], cfd[3], gfd;
	struct spw_member_stats ms[2];
	struct spw_cqe cqe[3];
	struct spw_ring next;

	t_listeners(lfd, 2, false, 8);
	gfd = t_group(lfd, 2, 8);
	vacate_both(gfd, lfd, cfd);

	t_ring(&next, gfd, 1);
	cr_assert_eq(t_reap(&next, 3, 5000, cqe), 3u);
	for (unsigned i = 0; i < 3; i++) {
		cr_expect_eq(cqe[i].origin, 0u);
		cr_expect(cqe[i].flags & SPW_CQE_F_SPILLED);
		cr_expect_lt(t_read_id(cqe[i].fd), 3u);
		close(cqe[i].fd);
	}
	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].rehomed, 3u);
	cr_expect_eq(ms[0].dropped + ms[1].dropped, 0u);

	end_vacancy_test(&next, gfd, lfd, cfd, 3);
}

/*
 * The last group and ring fd close: listeners are plain again, the
 * connections still waiting in the module are there for accept(), and
 * no socket leaks.
 */
Test(lifecycle, closing_the_group_restores_plain_accept, .timeout = 60)
{
	int base, lfd, gfd, cfd[3], afd;
	struct spw_ring ring;

	/* our own netns: tests running beside this one hold sockets too */
	t_private_netns();
	base = t_tcp_inuse();
	lfd = t_listener(AF_INET, 0, false, 8);
	gfd = t_group(&lfd, 1, 8);

	t_ring(&ring, gfd, 0);
	cfd[0] = t_connect_id(t_port(lfd), 0);
	cfd[1] = t_connect_id(t_port(lfd), 1);
	wait_pending(gfd, 0, 2);
	close(gfd);
	spw_ring_exit(&ring);	/* the last reference: the group goes */

	/* the two that waited in the module, then a new one */
	cfd[2] = t_connect_id(t_port(lfd), 2);
	for (unsigned i = 0; i < 3; i++) {
		afd = accept(lfd, NULL, NULL);
		cr_assert_geq(afd, 0);
		cr_expect_lt(t_read_id(afd), 3u);
		/* the accepted child reads and polls as a normal socket */
		close(afd);
	}
	for (unsigned i = 0; i < 3; i++)
		close(cfd[i]);
	close(lfd);
	/* closed sockets may linger briefly in TIME_WAIT, not "inuse" */
	for (long end = t_now_ms() + 3000; t_now_ms() < end; usleep(10000))
		if (t_tcp_inuse() <= base)
			break;
	cr_expect_leq(t_tcp_inuse(), base, "TCP sockets in use: %d, was %d",
		      t_tcp_inuse(), base);
}

/* Connections the module still holds at close are served, never lost. */
Test(lifecycle, group_and_rings_released_with_sockets_open, .timeout = 60)
{
	int lfd[4], gfd;
	struct spw_ring ring[4];

	t_listeners(lfd, 4, true, 8);
	gfd = t_group(lfd, 4, 4);
	for (unsigned i = 0; i < 4; i++)
		t_ring(&ring[i], gfd, i);
	close(gfd);
	/* the rings alone keep the group; they close in any order */
	spw_ring_exit(&ring[2]);
	spw_ring_exit(&ring[0]);
	spw_ring_exit(&ring[3]);
	spw_ring_exit(&ring[1]);
	for (unsigned i = 0; i < 4; i++) {
		int c = t_connect(AF_INET, t_port(lfd[0]));
		close(c);
	}
	for (unsigned i = 0; i < 4; i++) {
		/* each listener is free to join a new group */
		int g = t_group(&lfd[i], 1, 4);

		close(g);
		close(lfd[i]);
	}
}

/*
 * max_post: an enter hands over at most that many connections and then
 * returns, however many more it was asked to wait for; the rest keep
 * waiting in the module.
 */
Test(lifecycle, enter_max_hands_over_at_most_max, .timeout = 60)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	struct __kernel_timespec ts = { .tv_sec = 3 };
	struct spw_member_stats ms;
	struct spw_ring ring;
	int cfd[5];
	long t0;

	t_ring(&ring, gfd, 0);
	for (unsigned i = 0; i < 5; i++)
		cfd[i] = t_connect_id(t_port(lfd), i);
	wait_pending(gfd, 0, 5);

	cr_expect_eq(spw_enter_max(&ring, 2, 0, NULL), 2);
	cr_assert_eq(spw_group_stats(gfd, &ms, 1), 1);
	cr_expect_eq(ms.pending, 3);
	cr_expect_eq(ms.outstanding, 5);
	/* a spent budget ends the call: no wait for the 8 it cannot post */
	t0 = t_now_ms();
	cr_expect_eq(spw_enter_max(&ring, 1, 8, &ts), 3);
	cr_expect_lt(t_now_ms() - t0, 1500, "waited %ld ms", t_now_ms() - t0);
	/* 0: all that fit, as spw_enter() */
	cr_expect_eq(spw_enter_max(&ring, 0, 0, NULL), 5);
	cr_expect_eq(t_reap(&ring, 5, 1000, NULL), 5u);
	for (unsigned i = 0; i < 5; i++)
		close(cfd[i]);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

/*
 * A worker killed right after it took one connection (max_post 1, as the
 * preload's accept() does) loses only that one: the others still wait in
 * the module, and go to the sibling when the dead worker's ring closes.
 * With max_post 0 the first enter hands over all four, and the kill
 * resets them all.
 */
Test(lifecycle, killed_worker_loses_only_what_it_took, .timeout = 60)
{
	int lfd[2], gfd, sv[2], cfd[4], status, served = 0, reset = 0;
	struct spw_cqe out[4];
	struct spw_ring sib;
	char b;
	pid_t pid;

	t_listeners(lfd, 2, false, 8);
	gfd = t_group(lfd, 2, 8);
	t_ring(&sib, gfd, 1);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	if (!pid) {
		struct spw_ring r;
		int rfd = spw_ring_open(gfd, 0);
		int n;

		if (rfd < 0 || spw_ring_init(&r, rfd) || read(sv[1], &b, 1) != 1)
			_exit(2);
		n = spw_enter_max(&r, 1, 1, NULL);
		b = (char)n;
		if (write(sv[1], &b, 1) != 1)
			_exit(3);
		pause();	/* killed holding its CQE */
		_exit(4);
	}
	for (unsigned i = 0; i < 4; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	wait_pending(gfd, 0, 4);
	cr_assert_eq(write(sv[0], "g", 1), 1);
	cr_assert_eq(read(sv[0], &b, 1), 1);
	cr_expect_eq(b, 1, "the worker's enter returned %d", b);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);

	/* the dead worker's ring closed: its three waiting ones come here */
	cr_expect_eq(t_reap(&sib, 3, 5000, out), 3u);
	for (unsigned i = 0; i < 3; i++) {
		cr_expect_lt(t_read_id(out[i].fd), 4u);
		close(out[i].fd);
	}
	for (unsigned i = 0; i < 4; i++) {
		if (t_was_reset(cfd[i], 2000))
			reset++;
		else
			served++;
		close(cfd[i]);
	}
	cr_expect_eq(reset, 1, "%d reset, %d served", reset, served);
	spw_ring_exit(&sib);
	close(sv[0]);
	close(sv[1]);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}
