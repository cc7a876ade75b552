/* SPDX-License-Identifier: MIT */
/*
 * test_owner: a CQE's fd is a number in the file table of the process
 * whose enter installed it, and no other process that holds the ring
 * (fork, SCM_RIGHTS, a replacement worker) may take it for one of its
 * own: it would serve, or close, an unrelated fd of its own. The kernel
 * gives a ring's CQEs to one table at a time: another table's enter gets
 * -EBUSY while the owner has CQEs to consume, sees none of them in the
 * shared ring, and when the owner goes (exit, last close of the ring) what
 * it left is discarded and the next table starts clean.
 *
 * Every CQE a process takes here must carry an fd of its own: a TCP
 * socket connected to one of the clients this test made for it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

/* The local port of client @cfd: the peer port its server side sees. */
static uint16_t client_port(int cfd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	cr_assert_eq(getsockname(cfd, (void *)&sin, &len), 0);
	return ntohs(sin.sin_port);
}

/* The peer port of TCP socket @fd in this process, 0 if it is none. */
static uint16_t peer_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	if (fd < 0 || getpeername(fd, (void *)&sin, &len) || sin.sin_family != AF_INET)
		return 0;
	return ntohs(sin.sin_port);
}

/*
 * Is @fd, in this process, the server side of one of the @n clients
 * @cfd? (Not an fd at all, another kind of file, or another connection
 * all say no.)
 */
static bool fd_is_one_of(int fd, const int *cfd, unsigned n)
{
	uint16_t port = peer_port(fd);

	for (unsigned i = 0; port && i < n; i++)
		if (port == client_port(cfd[i]))
			return true;
	return false;
}

/* Wait until member 0 has @n connections pending (tokens), or fail. */
static void wait_pending0(int gfd, unsigned n)
{
	struct spw_member_stats ms;

	for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(5000)) {
		cr_assert_eq(spw_group_stats(gfd, &ms, 1), 1);
		if (ms.pending == n)
			return;
	}
	cr_assert_fail("%u pending, want %u", ms.pending, n);
}

/*
 * Enter and reap @ring for up to 5 s, until @n CQEs were ours: each must
 * carry an fd of one of the @n clients @cfd (its id, sent by
 * t_connect_id(), is at least @min_id). Returns how many did.
 */
static unsigned reap_own(struct spw_ring *ring, const int *cfd, unsigned n, uint32_t min_id)
{
	unsigned mine = 0;

	for (long end = t_now_ms() + 5000; mine < n && t_now_ms() < end;) {
		struct __kernel_timespec ts = { .tv_nsec = 200000000 };
		struct spw_cqe *cqe;
		unsigned head;
		int ret = spw_enter(ring, 1, &ts);

		cr_assert(ret >= 0 || ret == -ETIME, "enter: %s", strerror(-ret));
		spw_for_each_cqe(ring, head, cqe) {
			bool ok = fd_is_one_of(cqe->fd, cfd, n);

			cr_expect(ok, "a CQE with fd %d that is none of our connections",
				  cqe->fd);
			if (ok) {
				cr_expect_geq(t_read_id(cqe->fd), min_id);
				mine++;
				close(cqe->fd);
			}
			spw_cqe_seen(ring, cqe);
		}
	}
	return mine;
}

/*
 * The case: the parent opens and maps the ring, forks; the child
 * enters (two connections are installed in ITS table) and exits without
 * consuming them. The parent then takes what the ring gives it: only
 * connections installed in its own table, never the child's two numbers.
 */
Test(owner, a_forked_childs_leftovers_never_reach_the_parent, .timeout = 60)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	int old[2], fresh[2], status;
	struct spw_cqe *cqe;
	struct spw_ring ring;
	unsigned head, seen = 0, mine = 0;
	pid_t pid;

	t_ring(&ring, gfd, 0);
	for (unsigned i = 0; i < 2; i++)
		old[i] = t_connect_id(t_port(lfd), i);
	wait_pending0(gfd, 2);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		/* installs both in the child's table; consumes nothing */
		_exit(spw_enter(&ring, 2, NULL) == 2 ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %#x", status);
	/* what the child held died with it: its clients see the close */
	for (unsigned i = 0; i < 2; i++) {
		char c;

		cr_expect_leq(read(old[i], &c, 1), 0, "the child's connection %u lives", i);
	}

	/* the parent has its own fds at the numbers the child's CQEs named */
	for (unsigned i = 0; i < 2; i++)
		fresh[i] = t_connect_id(t_port(lfd), 10 + i);
	spw_for_each_cqe(&ring, head, cqe) {
		seen++;
		cr_expect(fd_is_one_of(cqe->fd, fresh, 2),
			  "a CQE with fd %d that is none of our connections (before our enter)",
			  cqe->fd);
	}
	cr_expect_eq(seen, 0u, "%u CQEs visible before the parent entered", seen);
	spw_cq_advance(&ring, seen);
	mine = reap_own(&ring, fresh, 2, 10);
	cr_expect_eq(mine, 2u, "got %u of our 2 connections", mine);
	for (unsigned i = 0; i < 2; i++) {
		close(old[i]);
		close(fresh[i]);
	}
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

/*
 * Two live processes hold one ring. While the one that entered has CQEs
 * to consume, the other's enter fails with -EBUSY and its fast path shows
 * none; once the first has consumed them, the second may take the ring.
 */
Test(owner, a_second_process_waits_until_the_owner_has_consumed, .timeout = 60)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	int go[2], back[2], cfd[2], status;
	struct spw_ring ring;
	struct spw_cqe *cqe;
	pid_t pid;
	char b;

	t_ring(&ring, gfd, 0);
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(back), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		struct spw_cqe *c;
		uint16_t port;
		int ret, code = 0;

		/* 1: the parent owns an unconsumed CQE */
		if (read(go[0], &b, 1) != 1)
			_exit(10);
		ret = spw_enter(&ring, 0, NULL);
		if (ret != -EBUSY)
			code |= 1;
		if (!spw_peek_cqe(&ring, &c))
			code |= 2;
		b = (char)code;
		if (write(back[1], &b, 1) != 1)
			_exit(11);
		/* 2: the parent has consumed it; a client for us has this port */
		if (read(go[0], &port, sizeof(port)) != sizeof(port))
			_exit(12);
		ret = spw_enter(&ring, 1, &(struct __kernel_timespec){ .tv_sec = 5 });
		if (ret != 1 || spw_peek_cqe(&ring, &c) || peer_port(c->fd) != port)
			code |= 4;
		_exit(code);
	}
	cfd[0] = t_connect_id(t_port(lfd), 0);
	cr_assert_eq(spw_enter(&ring, 1, &(struct __kernel_timespec){ .tv_sec = 5 }), 1);
	cr_assert_eq(write(go[1], "1", 1), 1);
	cr_assert_eq(read(back[0], &b, 1), 1);
	cr_expect_eq(b & 1, 0, "the second process's enter was not refused");
	cr_expect_eq(b & 2, 0, "the second process saw the owner's CQE");
	cr_assert_eq(spw_peek_cqe(&ring, &cqe), 0);
	cr_expect(fd_is_one_of(cqe->fd, cfd, 1));
	close(cqe->fd);
	spw_cqe_seen(&ring, cqe);
	/* consumed: the child may take the ring, and gets its connection */
	cfd[1] = t_connect_id(t_port(lfd), 1);
	wait_pending0(gfd, 1);
	{
		uint16_t port = client_port(cfd[1]);

		cr_assert_eq(write(go[1], &port, sizeof(port)), (ssize_t)sizeof(port));
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: %#x", status);
	/* the child left with its CQE unconsumed: nothing of it for us */
	cr_expect_eq(spw_cq_ready(&ring), 0u);
	close(cfd[0]);
	close(cfd[1]);
	for (unsigned i = 0; i < 2; i++) {
		close(go[i]);
		close(back[i]);
	}
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

/*
 * A worker dies (SIGKILL) holding CQEs it never consumed, and the ring
 * lives on in the master, which hands it to a replacement (here: enters
 * it itself). The replacement's first CQEs are its own connections; the
 * dead worker's never show up, and their clients were closed with it.
 */
Test(owner, a_killed_workers_cqes_do_not_pass_to_its_replacement, .timeout = 60)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	int old[3], fresh[3], sv[2], status;
	struct spw_member_stats ms;
	struct spw_ring ring;
	unsigned got = 0;
	pid_t pid;
	char b;

	t_ring(&ring, gfd, 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	for (unsigned i = 0; i < 3; i++)
		old[i] = t_connect_id(t_port(lfd), i);
	wait_pending0(gfd, 3);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		b = (char)spw_enter(&ring, 3, NULL);
		if (write(sv[1], &b, 1) != 1)
			_exit(1);
		pause();
		_exit(2);
	}
	cr_assert_eq(read(sv[0], &b, 1), 1);
	cr_assert_eq(b, 3);
	kill(pid, SIGKILL);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert_eq(spw_group_stats(gfd, &ms, 1), 1);
	cr_expect_eq(ms.outstanding, 0u, "the dead worker's CQEs still count as outstanding");

	for (unsigned i = 0; i < 3; i++)
		fresh[i] = t_connect_id(t_port(lfd), 10 + i);
	got = reap_own(&ring, fresh, 3, 10);
	cr_expect_eq(got, 3u);
	for (unsigned i = 0; i < 3; i++) {
		close(old[i]);
		close(fresh[i]);
	}
	close(sv[0]);
	close(sv[1]);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}
