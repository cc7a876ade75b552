/* SPDX-License-Identifier: MIT */
/*
 * test_delivery: a connection that arrives on a member reaches that
 * member's ring as a ready fd with the right addresses; one enter hands
 * over a whole batch; peeking needs no syscall; the ring fd polls.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

Test(delivery, control_device_exists)
{
	struct stat st;

	cr_assert_eq(stat(SPW_DEVICE_PATH, &st), 0);
	cr_expect(S_ISCHR(st.st_mode));
}

static void one_connection(int family)
{
	struct sockaddr_storage cl;
	socklen_t len = sizeof(cl);
	struct spw_ring ring;
	struct spw_cqe cqe;
	int lfd = t_listener(family, 0, false, 16);
	uint16_t port = t_port(lfd);
	int gfd = t_group(&lfd, 1, 8);
	int cfd;
	char buf[8];

	t_ring(&ring, gfd, 0);
	cfd = t_connect(family, port);
	cr_assert_eq(t_reap(&ring, 1, 5000, &cqe), 1);

	cr_expect_eq(cqe.flags, 0u);
	cr_expect_eq(cqe.origin, 0u);
	cr_expect_eq(cqe.member, 0u);
	{
		/* the local end (the fd's own) and the member's address (the header's) */
		struct sockaddr_storage req, srv;
		socklen_t rlen = sizeof(req), slen = sizeof(srv);

		cr_assert_eq(spw_cqe_requested_addr(&ring, &cqe, (void *)&req, &rlen), 0);
		cr_expect_eq(req.ss_family, family);
		cr_expect_eq(ntohs(((struct sockaddr_in *)&req)->sin_port), port);
		cr_assert_eq(spw_cqe_served_addr(&ring, &cqe, (void *)&srv, &slen), 0);
		cr_expect_eq(srv.ss_family, family);
		cr_expect_eq(rlen, slen);
		cr_expect_eq(memcmp(&req, &srv, rlen), 0, "a member's own connection is served as asked");
	}
	cr_assert_eq(getsockname(cfd, (void *)&cl, &len), 0);
	cr_expect_eq(cqe.peer.family, (unsigned)family);
	cr_expect_eq(cqe.peer.port, ntohs(((struct sockaddr_in *)&cl)->sin_port));

	/* the fd is a live, connected socket in our table */
	cr_assert_eq(write(cqe.fd, "hi", 2), 2);
	cr_assert_eq(read(cfd, buf, sizeof(buf)), 2);
	cr_expect_eq(memcmp(buf, "hi", 2), 0);
	cr_assert_eq(write(cfd, "yo", 2), 2);
	cr_assert_eq(read(cqe.fd, buf, sizeof(buf)), 2);

	struct spw_member_stats ms;
	cr_assert_eq(spw_group_stats(gfd, &ms, 1), 1);
	cr_expect_eq(ms.arrived, 1);
	cr_expect_eq(ms.delivered, 1);
	cr_expect_eq(ms.spilled_out + ms.spilled_in + ms.dropped, 0);
	cr_expect_eq(ms.outstanding, 0u);

	close(cqe.fd);
	close(cfd);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

Test(delivery, one_member_ipv4)
{
	one_connection(AF_INET);
}

Test(delivery, one_member_ipv6)
{
	one_connection(AF_INET6);
}

Test(delivery, one_enter_hands_over_a_batch)
{
	enum { N = 20 };
	int lfd = t_listener(AF_INET, 0, false, 64);
	int gfd = t_group(&lfd, 1, 32);
	struct spw_member_stats ms;
	struct spw_ring ring;
	int cfd[N];
	int ret;

	t_ring(&ring, gfd, 0);
	for (int i = 0; i < N; i++)
		cfd[i] = t_connect(AF_INET, t_port(lfd));
	/* all N are pending in the kernel: no CQE until we enter */
	for (long end = t_now_ms() + 5000; t_now_ms() < end;) {
		spw_group_stats(gfd, &ms, 1);
		if (ms.pending == N)
			break;
		usleep(10000);
	}
	cr_assert_eq(ms.pending, (unsigned)N);
	cr_expect_eq(spw_cq_ready(&ring), 0u);

	ret = spw_enter(&ring, 1, NULL);
	cr_expect_eq(ret, N, "one enter returned %d CQEs", ret);
	cr_expect_eq(spw_cq_ready(&ring), (unsigned)N);

	/* now they are all reachable without a syscall */
	cr_expect_eq(t_drain(&ring), (unsigned)N);
	for (int i = 0; i < N; i++)
		close(cfd[i]);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

Test(delivery, wait_times_out_with_etime)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	struct __kernel_timespec ts = { .tv_nsec = 200 * 1000000 };
	struct spw_ring ring;
	struct spw_cqe *cqe;
	long t0;

	t_ring(&ring, gfd, 0);
	t0 = t_now_ms();
	cr_expect_eq(spw_wait_cqe_timeout(&ring, &cqe, &ts), -ETIME);
	cr_expect_geq(t_now_ms() - t0, 190);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

struct poller {
	int fd;
	int ret;
	short revents;
	long took_ms;
};

static void *poll_thread(void *arg)
{
	struct poller *p = arg;
	struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
	long t0 = t_now_ms();

	p->ret = poll(&pfd, 1, 5000);
	p->revents = pfd.revents;
	p->took_ms = t_now_ms() - t0;
	return NULL;
}

/* The poll sleeps before the connection exists: the arrival must wake it. */
Test(delivery, ring_fd_polls_readable_when_work_arrives)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	struct spw_ring ring;
	struct poller pl;
	struct pollfd p;
	pthread_t th;
	int cfd;

	t_ring(&ring, gfd, 0);
	p = (struct pollfd){ .fd = ring.ring_fd, .events = POLLIN };
	cr_expect_eq(poll(&p, 1, 100), 0, "readable with no connection");
	pl = (struct poller){ .fd = ring.ring_fd };
	pthread_create(&th, NULL, poll_thread, &pl);
	usleep(200000);
	cfd = t_connect(AF_INET, t_port(lfd));
	pthread_join(th, NULL);
	cr_expect_eq(pl.ret, 1);
	cr_expect(pl.revents & POLLIN);
	cr_expect_lt(pl.took_ms, 2000, "woken after %ld ms", pl.took_ms);
	/* still readable while the CQE is posted and not consumed */
	cr_assert_eq(spw_enter(&ring, 0, NULL), 1);
	cr_expect_eq(poll(&p, 1, 0), 1);
	cr_assert_eq(t_reap(&ring, 1, 1000, NULL), 1);
	cr_expect_eq(poll(&p, 1, 0), 0);
	close(cfd);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

Test(delivery, connections_queued_before_registration_are_delivered)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	struct spw_ring ring;
	int cfd[3], gfd;

	for (int i = 0; i < 3; i++)
		cfd[i] = t_connect_id(t_port(lfd), i);
	usleep(100000);
	gfd = t_group(&lfd, 1, 8);
	t_ring(&ring, gfd, 0);
	cr_expect_eq(t_reap(&ring, 3, 5000, NULL), 3);
	for (int i = 0; i < 3; i++)
		close(cfd[i]);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

Test(delivery, accept_flags_apply_to_new_fds)
{
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8);
	struct spw_ring ring;
	struct spw_cqe cqe;
	int cfd;

	t_ring(&ring, gfd, 0);
	spw_ring_set_accept_flags(&ring, SPW_ACCEPT_NONBLOCK | SPW_ACCEPT_CLOEXEC);
	cfd = t_connect(AF_INET, t_port(lfd));
	cr_assert_eq(t_reap(&ring, 1, 5000, &cqe), 1);
	cr_expect(fcntl(cqe.fd, F_GETFL) & O_NONBLOCK);
	cr_expect(fcntl(cqe.fd, F_GETFD) & FD_CLOEXEC);
	close(cqe.fd);
	close(cfd);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}
