/* SPDX-License-Identifier: MIT */
/*
 * test_policy (guest): listeners made for the caller (claim 17), members on
 * different addresses (claim 6), each placement policy's defining choice,
 * and consumers that wait in poll/epoll counting as responsive. Real TCP
 * connections on loopback; each test says what it would catch.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "loopback.h"

static struct sockaddr_in v4(const char *ip, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };

	cr_assert_eq(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
	return sin;
}

static int connect_to(const struct sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, sa, len), 0, "connect: %s", strerror(errno));
	return fd;
}

static uint16_t sa_port(const struct sockaddr_storage *ss)
{
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	cr_assert_eq(sched_setaffinity(0, sizeof(set), &set), 0);
}

/* Claim 17: the listeners are made for us; port 0 picks one for all. */
static void group_listen_family(int family)
{
	struct sockaddr_storage ss = { 0 }, got;
	socklen_t len = t_loopback(family, 0, &ss), glen;
	struct spw_ring rings[3];
	uint16_t port = 0;
	int gfd, one = 0;
	socklen_t olen = sizeof(one);

	gfd = spw_group_listen((struct sockaddr *)&ss, len, 3, 16,
			       &(struct spw_group_params){ .ring_entries = 8,
							   .policy = SPW_POLICY_ORIGIN });
	cr_assert_geq(gfd, 0, "spw_group_listen: %s", strerror(-gfd));
	for (unsigned m = 0; m < 3; m++) {
		int lfd = spw_member_listener(gfd, m);

		cr_assert_geq(lfd, 0, "spw_member_listener(%u): %s", m, strerror(-lfd));
		glen = sizeof(got);
		cr_assert_eq(getsockname(lfd, (struct sockaddr *)&got, &glen), 0);
		cr_expect_eq(got.ss_family, family);
		if (!m)
			port = sa_port(&got);
		cr_expect_neq(port, 0);
		cr_expect_eq(sa_port(&got), port, "member %u on another port", m);
		cr_expect_eq(getsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, &olen), 0);
		cr_expect_eq(one, 1, "member %u without SO_REUSEPORT", m);
		cr_expect_eq(getsockopt(lfd, SOL_SOCKET, SO_ACCEPTCONN, &one, &olen), 0);
		cr_expect_eq(one, 1, "member %u is not listening", m);
		close(lfd);
		t_ring(&rings[m], gfd, m);
	}
	cr_expect_eq(spw_member_listener(gfd, 3), -EINVAL);

	/* connections to the one port are served through the rings */
	int cfd[6];
	unsigned got_n = 0;

	for (int i = 0; i < 6; i++)
		cfd[i] = t_connect(family, port);
	for (int round = 0; round < 50 && got_n < 6; round++)
		for (unsigned m = 0; m < 3; m++)
			got_n += t_reap(&rings[m], 6, 10, NULL);
	cr_expect_eq(got_n, 6, "served %u of 6", got_n);
	for (int i = 0; i < 6; i++)
		close(cfd[i]);
	for (unsigned m = 0; m < 3; m++)
		spw_ring_exit(&rings[m]);
	close(gfd);
}

Test(listen, ipv4_port_0)
{
	group_listen_family(AF_INET);
}

Test(listen, ipv6_port_0)
{
	group_listen_family(AF_INET6);
}

Test(listen, bad_requests_are_refused)
{
	struct sockaddr_in sin = v4("127.0.0.1", 0);
	struct sockaddr_un_like { unsigned short fam; char path[14]; } un = { .fam = AF_UNIX };

	cr_expect_eq(spw_group_listen((void *)&sin, 4, 2, 8, NULL), -EINVAL, "short addrlen");
	cr_expect_eq(spw_group_listen((void *)&un, sizeof(un), 2, 8, NULL), -EAFNOSUPPORT);
	cr_expect_eq(spw_group_listen((void *)&sin, sizeof(sin), 0, 8, NULL), -EINVAL);
	cr_expect_eq(spw_group_listen((void *)&sin, sizeof(sin), SPW_MAX_MEMBERS + 1, 8, NULL),
		     -E2BIG);
	cr_expect_eq(spw_group_listen((void *)&sin, sizeof(sin), 2, 8,
				      &(struct spw_group_params){ .policy = 99 }), -EINVAL);
	cr_expect_eq(spw_group_listen((void *)&sin, sizeof(sin), 2, 8,
				      &(struct spw_group_params){ .ring_entries = 4,
								  .spill_at = 5 }), -EINVAL);
	cr_expect_eq(spw_group_listen(NULL, sizeof(sin), 2, 8, NULL), -EFAULT);
	/* a port someone else holds without SO_REUSEPORT: bind fails, nothing leaks */
	int lfd = t_listener(AF_INET, 0, false, 8);

	sin.sin_port = htons(t_port(lfd));
	cr_expect_eq(spw_group_listen((void *)&sin, sizeof(sin), 2, 8, NULL), -EADDRINUSE);
	close(lfd);
}

/* A port below 1024 needs CAP_NET_BIND_SERVICE, as for the caller's own bind(). */
Test(listen, low_port_needs_the_capability)
{
	struct sockaddr_in sin = v4("127.0.0.1", 999);
	pid_t pid = fork();
	int st;

	cr_assert_geq(pid, 0);
	if (!pid) {
		int gfd;

		if (setgid(65534) || setuid(65534))
			_exit(3);
		gfd = spw_group_listen((void *)&sin, sizeof(sin), 2, 8, NULL);
		_exit(gfd == -EACCES ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "an unprivileged caller bound port 999 (status %d)", st);

	/* root may */
	int gfd = spw_group_listen((void *)&sin, sizeof(sin), 2, 8, NULL);

	cr_expect_geq(gfd, 0, "root: %s", strerror(-gfd));
	close(gfd);
}

/* The listeners live as long as the group, or as a handed-out fd. */
Test(listen, member_listener_outlives_the_group)
{
	struct sockaddr_in sin = v4("127.0.0.1", 0);
	int gfd = spw_group_listen((void *)&sin, sizeof(sin), 2, 8, NULL);
	int lfd, cfd, afd;

	cr_assert_geq(gfd, 0);
	lfd = spw_member_listener(gfd, 0);
	cr_assert_geq(lfd, 0);
	close(gfd);
	/* the group is gone; its member is a plain listener now */
	cfd = t_connect(AF_INET, t_port(lfd));
	afd = accept(lfd, NULL, NULL);
	cr_expect_geq(afd, 0, "plain accept on a former member: %s", strerror(errno));
	close(afd);
	close(cfd);
	close(lfd);
}

/*
 * Holding the group fd is not holding its listeners. A worker that was
 * given only the group fd and dropped its privileges must not get the
 * master's listener back (it could shut the port down, steer it with a
 * reuseport BPF program, or accept() from it): only a caller that could
 * have registered the socket (its owner, or CAP_NET_ADMIN) may.
 */
Test(listen, a_member_listener_needs_the_listeners_owner)
{
	struct sockaddr_in sin = v4("127.0.0.1", 0);
	int gfd = spw_group_listen((void *)&sin, sizeof(sin), 2, 8, NULL);
	pid_t pid;
	int st, lfd;

	cr_assert_geq(gfd, 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		int fd;

		if (setgid(65534) || setuid(65534))
			_exit(3);
		fd = spw_member_listener(gfd, 0);
		_exit(fd == -EPERM ? 0 : fd >= 0 ? 1 : 2);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "an unprivileged holder of the group fd got the listener (status %#x)", st);
	lfd = spw_member_listener(gfd, 0);
	cr_expect_geq(lfd, 0, "the owner: %s", strerror(-lfd));
	close(lfd);
	close(gfd);
}

/*
 * A group of listeners the caller made and kept hands none out: whoever
 * created it holds them already, and nobody else needs them.
 */
Test(listen, a_group_of_the_callers_listeners_hands_none_out)
{
	int lfd = t_listener(AF_INET, 0, false, 8);
	int gfd = t_group(&lfd, 1, 4);

	cr_expect_eq(spw_member_listener(gfd, 0), -EOPNOTSUPP);
	close(gfd);
	close(lfd);
}

/*
 * spw_group_listen() makes its sockets as the caller's own socket() and
 * bind() would: they count against RLIMIT_NOFILE (the module made them
 * outside any limit). And a call that fails changes nothing: another
 * listener already on the port (SO_REUSEPORT, same owner) keeps every
 * connection, as none of ours ever listened.
 */
Test(listen, the_listeners_count_against_rlimit_nofile, .timeout = 60)
{
	struct sockaddr_in sin = v4("127.0.0.1", 0);
	int other = t_listener(AF_INET, 0, true, 64), fd, gfd, got = 0;
	struct rlimit rl, low;

	sin.sin_port = htons(t_port(other));
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	fd = dup(0);
	cr_assert_geq(fd, 0);
	close(fd);
	low = rl;
	low.rlim_cur = fd + 2;	/* room for two sockets, not four */
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	gfd = spw_group_listen((void *)&sin, sizeof(sin), 4, 8, NULL);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	cr_expect_eq(gfd, -EMFILE, "four listeners with room for two fds: %d", gfd);
	if (gfd >= 0)
		close(gfd);
	/* every connection to the port reaches the listener that was there */
	for (unsigned i = 0; i < 16; i++) {
		int cfd = t_connect(AF_INET, t_port(other)), afd;

		if (poll(&(struct pollfd){ .fd = other, .events = POLLIN }, 1, 2000) == 1 &&
		    (afd = accept(other, NULL, NULL)) >= 0) {
			got++;
			close(afd);
		}
		close(cfd);
	}
	cr_expect_eq(got, 16, "%d of 16 reached the port's listener", got);
	close(other);
}

/*
 * Claim 6: members bound to different addresses. Member 0 (127.0.0.1)
 * has a full ring, so connections for 127.0.0.1 are served by member 1
 * (127.0.0.2) and member 2 ([::1]); each CQE names the address the client
 * asked for and the address of the member that serves it.
 */
Test(addresses, spill_between_addresses_names_both)
{
	int lfd[3], cfd[3], gfd;
	struct sockaddr_in a0 = v4("127.0.0.1", 0), a1;
	struct spw_ring rings[3];
	struct sockaddr_storage req, srv;
	socklen_t len;
	uint16_t port;
	unsigned m, seen = 0;

	lfd[0] = t_listener(AF_INET, 0, false, 8);
	port = t_port(lfd[0]);
	/* same port, another address: its own socket, no SO_REUSEPORT needed */
	a1 = v4("127.0.0.2", port);
	lfd[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(bind(lfd[1], (void *)&a1, sizeof(a1)), 0, "bind 127.0.0.2: %s",
		     strerror(errno));
	cr_assert_eq(listen(lfd[1], 8), 0);
	lfd[2] = t_listener(AF_INET6, port, false, 8);
	gfd = t_group_policy(lfd, 3, 1, SPW_STALL_OFF, SPW_POLICY_ORIGIN, 0);
	for (m = 0; m < 3; m++)
		t_ring(&rings[m], gfd, m);
	a0.sin_port = htons(port);
	/* ring 0 (one entry) holds an unconsumed CQE: full */
	cfd[0] = connect_to((void *)&a0, sizeof(a0));
	cr_assert_eq(spw_enter(&rings[0], 1, NULL), 1);
	/* the next two spill, one to each sibling (each ring holds one) */
	cfd[1] = connect_to((void *)&a0, sizeof(a0));
	cfd[2] = connect_to((void *)&a0, sizeof(a0));
	for (int round = 0; round < 200 && seen != 6; round++) {
		for (m = 1; m < 3; m++)
			if (spw_enter(&rings[m], 0, NULL) == 1)
				seen |= 1u << m;
		usleep(10 * 1000);
	}
	cr_assert_eq(seen, 6, "rings 1 and 2 did not each get one (mask %#x)", seen);
	for (m = 1; m < 3; m++) {
		struct spw_cqe *cqe = &rings[m].cqes[*rings[m].khead & rings[m].ring_mask];

		cr_expect(cqe->flags & SPW_CQE_F_SPILLED);
		cr_expect_eq(cqe->origin, 0);
		cr_expect_eq(cqe->member, m);
		len = sizeof(req);
		cr_assert_eq(spw_cqe_requested_addr(&rings[m], cqe, (void *)&req, &len), 0);
		cr_expect_eq(len, sizeof(struct sockaddr_in));
		cr_expect_eq(((struct sockaddr_in *)&req)->sin_addr.s_addr, htonl(0x7f000001),
			     "ring %u: the requested address is not 127.0.0.1", m);
		cr_expect_eq(sa_port(&req), port);
		len = sizeof(srv);
		cr_assert_eq(spw_cqe_served_addr(&rings[m], cqe, (void *)&srv, &len), 0);
		cr_expect_eq(sa_port(&srv), port);
		if (m == 1) {
			cr_expect_eq(len, sizeof(struct sockaddr_in));
			cr_expect_eq(((struct sockaddr_in *)&srv)->sin_addr.s_addr,
				     htonl(0x7f000002), "ring 1 served as another address");
		} else {
			cr_expect_eq(len, sizeof(struct sockaddr_in6));
			cr_expect_eq(srv.ss_family, AF_INET6);
			cr_expect(IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&srv)->sin6_addr));
		}
		/* TCP's 4-tuple is unchanged: the socket's own address is 127.0.0.1 */
		len = sizeof(req);
		cr_assert_eq(getsockname(cqe->fd, (void *)&req, &len), 0);
		cr_expect_eq(((struct sockaddr_in *)&req)->sin_addr.s_addr, htonl(0x7f000001));
		cr_expect_eq(write(cqe->fd, "x", 1), 1);
		close(cqe->fd);
		spw_cqe_seen(&rings[m], cqe);
	}
	/* both spilled clients got their byte over the connection they made */
	for (int i = 1; i < 3; i++) {
		struct pollfd p = { .fd = cfd[i], .events = POLLIN };

		cr_expect_eq(poll(&p, 1, 2000), 1, "client %d got nothing", i);
	}
	for (int i = 0; i < 3; i++)
		close(cfd[i]);
	for (m = 0; m < 3; m++)
		spw_ring_exit(&rings[m]);
	close(gfd);
	for (int i = 0; i < 3; i++)
		close(lfd[i]);
}

/*
 * Leave @n connections to member 0 as unconsumed CQEs on ring 0: the
 * ring's load as every policy sees it.
 */
static void load_ring0(struct spw_ring *r0, uint16_t port0, int *cfd, unsigned n)
{
	struct __kernel_timespec ts = { .tv_sec = 2 };

	for (unsigned i = 0; i < n; i++) {
		cfd[i] = t_connect(AF_INET, port0);
		cr_assert_eq(spw_enter(r0, i + 1, &ts), (int)i + 1,
			     "connection %u of the load went elsewhere", i);
	}
}

/* One more connection to member 0: which ring serves it? */
static unsigned served_by(struct spw_ring *rings, unsigned nr, uint16_t port0,
			  unsigned skip0, int *cfd)
{
	*cfd = t_connect(AF_INET, port0);
	for (int round = 0; round < 200; round++)
		for (unsigned m = 0; m < nr; m++) {
			int n = spw_enter(&rings[m], 0, NULL);

			if (n > (int)(m ? 0 : skip0))
				return m;
		}
	cr_assert_fail("no ring got the connection");
	return ~0u;
}

static void policy_case(unsigned policy, unsigned spill_at, unsigned load0,
			unsigned expect, const char *why)
{
	int lfd[3], cfd[16], extra, gfd;
	struct spw_ring rings[3];

	t_listeners(lfd, 3, false, 16);
	gfd = t_group_policy(lfd, 3, 16, SPW_STALL_OFF, policy, spill_at);
	for (unsigned m = 0; m < 3; m++)
		t_ring(&rings[m], gfd, m);
	load_ring0(&rings[0], t_port(lfd[0]), cfd, load0);
	cr_expect_eq(served_by(rings, 3, t_port(lfd[0]), load0, &extra), expect,
		     "policy %u spill_at %u, ring 0 holding %u: %s", policy, spill_at,
		     load0, why);
	close(extra);
	for (unsigned i = 0; i < load0; i++)
		close(cfd[i]);
	for (unsigned m = 0; m < 3; m++)
		spw_ring_exit(&rings[m]);
	close(gfd);
	for (unsigned m = 0; m < 3; m++)
		close(lfd[m]);
}

Test(policy, origin_keeps_work_while_it_has_room)
{
	policy_case(SPW_POLICY_ORIGIN, 0, 5, 0, "origin has room");
}

Test(policy, spill_at_spills_before_full)
{
	policy_case(SPW_POLICY_ORIGIN, 4, 3, 0, "below spill_at");
	policy_case(SPW_POLICY_ORIGIN, 4, 4, 1, "at spill_at: the least loaded (1, first of ties)");
}

Test(policy, least_joins_the_shortest_queue)
{
	policy_case(SPW_POLICY_LEAST, 0, 1, 1, "ring 0 holds 1, ring 1 is empty");
	policy_case(SPW_POLICY_LEAST, 0, 0, 0, "all empty: the origin on ties");
}

Test(policy, p2c_leaves_a_loaded_origin)
{
	/* with 3 rings both random siblings (1 and 2) are empty */
	int lfd[3], cfd[16], extra, gfd;
	struct spw_ring rings[3];
	unsigned m;

	t_listeners(lfd, 3, false, 16);
	gfd = t_group_policy(lfd, 3, 16, SPW_STALL_OFF, SPW_POLICY_P2C, 0);
	for (m = 0; m < 3; m++)
		t_ring(&rings[m], gfd, m);
	load_ring0(&rings[0], t_port(lfd[0]), cfd, 1);
	m = served_by(rings, 3, t_port(lfd[0]), 1, &extra);
	cr_expect(m == 1 || m == 2, "p2c kept a loaded origin (ring %u)", m);
	close(extra);
	close(cfd[0]);
	for (m = 0; m < 3; m++)
		spw_ring_exit(&rings[m]);
	close(gfd);
	for (m = 0; m < 3; m++)
		close(lfd[m]);
	policy_case(SPW_POLICY_P2C, 0, 0, 0, "all empty: the origin on ties");
}

/*
 * SPW_POLICY_CPU: a connection goes to the ring whose consumer last ran on
 * the CPU that processed it. On loopback, the client's CPU processes the
 * handshake, so pinning the client picks the CPU.
 */
Test(policy, cpu_follows_the_consumer)
{
	int lfd[2], cfd[2], gfd;
	struct spw_ring rings[2];
	struct spw_cqe cqe;
	cpu_set_t old;

	cr_assert_eq(sched_getaffinity(0, sizeof(old), &old), 0);
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		cr_skip_test("needs 2 CPUs");
	t_listeners(lfd, 2, false, 8);
	gfd = t_group_policy(lfd, 2, 8, SPW_STALL_OFF, SPW_POLICY_CPU, 0);
	t_ring(&rings[0], gfd, 0);
	t_ring(&rings[1], gfd, 1);
	pin(1);
	cr_assert_eq(spw_enter(&rings[0], 0, NULL), 0);	/* ring 0's consumer ran on CPU 1 */
	pin(0);
	cr_assert_eq(spw_enter(&rings[1], 0, NULL), 0);	/* ring 1's on CPU 0 */
	cfd[0] = t_connect(AF_INET, t_port(lfd[0]));	/* from CPU 0, to member 0 */
	cr_expect_eq(t_reap(&rings[1], 1, 2000, &cqe), 1, "CPU 0's connection not on ring 1");
	cr_expect_eq(cqe.origin, 0);
	close(cqe.fd);
	pin(1);
	cfd[1] = t_connect(AF_INET, t_port(lfd[1]));	/* from CPU 1, to member 1 */
	cr_expect_eq(t_reap(&rings[0], 1, 2000, &cqe), 1, "CPU 1's connection not on ring 0");
	cr_expect_eq(cqe.origin, 1);
	close(cqe.fd);
	sched_setaffinity(0, sizeof(old), &old);
	close(cfd[0]);
	close(cfd[1]);
	spw_ring_exit(&rings[0]);
	spw_ring_exit(&rings[1]);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}

/*
 * A consumer that waits in epoll_wait() never sleeps in enter. Idle for far
 * longer than the stall time, it must still count as responsive: the
 * connection stays on its ring (not spilled to the sibling asleep in
 * enter), and epoll_wait() wakes for it at once.
 */
struct sleeper {
	struct spw_ring *r;
	int n;
};

static void *enter_sleeper(void *arg)
{
	struct sleeper *s = arg;
	struct __kernel_timespec ts = { .tv_sec = 3 };

	s->n = spw_enter(s->r, 1, &ts);
	return NULL;
}

/*
 * Two members on their own ports, the default policy (what an event-loop
 * server gets without asking), stall 20 ms; ring 0's consumer waits in
 * epoll (registered, nothing ready yet), ring 1 is open.
 */
struct epoll_pair {
	int lfd[2], gfd, ep;
	struct spw_ring rings[2];
};

static void epoll_pair_open(struct epoll_pair *pp)
{
	struct epoll_event ev = { .events = EPOLLIN }, out;

	t_listeners(pp->lfd, 2, false, 8);
	pp->gfd = t_group_policy(pp->lfd, 2, 8, 20, 0, 0);
	t_ring(&pp->rings[0], pp->gfd, 0);
	t_ring(&pp->rings[1], pp->gfd, 1);
	pp->ep = epoll_create1(EPOLL_CLOEXEC);
	cr_assert_eq(epoll_ctl(pp->ep, EPOLL_CTL_ADD, pp->rings[0].ring_fd, &ev), 0);
	cr_assert_eq(epoll_wait(pp->ep, &out, 1, 0), 0);
}

static void epoll_pair_close(struct epoll_pair *pp)
{
	close(pp->ep);
	spw_ring_exit(&pp->rings[0]);
	spw_ring_exit(&pp->rings[1]);
	close(pp->gfd);
	close(pp->lfd[0]);
	close(pp->lfd[1]);
}

Test(poll, idle_epoll_consumer_is_responsive)
{
	struct epoll_pair pp;
	struct spw_ring *rings = pp.rings;
	struct epoll_event out;
	struct sleeper s;
	struct spw_cqe cqe;
	pthread_t th;
	int cfd;
	long t0;

	epoll_pair_open(&pp);
	/* ring 1's consumer sleeps in enter: a responsive sibling to spill to */
	s.r = &rings[1];
	s.n = 0;
	cr_assert_eq(pthread_create(&th, NULL, enter_sleeper, &s), 0);
	usleep(300 * 1000);			/* 15 stall times idle in "epoll" */
	cfd = t_connect(AF_INET, t_port(pp.lfd[0]));
	t0 = t_now_ms();
	cr_assert_eq(epoll_wait(pp.ep, &out, 1, 2000), 1, "epoll_wait never woke");
	cr_expect_lt(t_now_ms() - t0, 500, "woke after %ld ms", t_now_ms() - t0);
	cr_expect_eq(t_reap(&rings[0], 1, 500, &cqe), 1,
		     "an idle epoll consumer lost its connection to a sibling");
	cr_expect_eq(cqe.flags & SPW_CQE_F_SPILLED, 0);
	close(cqe.fd);
	pthread_join(th, NULL);
	cr_expect_eq(s.n, -ETIME, "the sleeping sibling got a connection (%d)", s.n);
	close(cfd);
	epoll_pair_close(&pp);
}

/*
 * The same consumer, stuck (registered in epoll, never waiting again):
 * once its connection has waited a stall time, the idle sibling takes it.
 */
Test(poll, stuck_epoll_consumer_loses_its_work)
{
	struct epoll_pair pp;
	struct spw_ring *rings = pp.rings;
	struct spw_cqe cqe;
	int cfd;
	long t0;

	epoll_pair_open(&pp);
	/* the consumer of ring 0 never comes back */
	cfd = t_connect(AF_INET, t_port(pp.lfd[0]));
	t0 = t_now_ms();
	cr_expect_eq(t_reap(&rings[1], 1, 3000, &cqe), 1,
		     "the connection stayed behind a stuck consumer");
	cr_expect_lt(t_now_ms() - t0, 1500, "taken after %ld ms", t_now_ms() - t0);
	cr_expect_eq(cqe.origin, 0);
	close(cqe.fd);
	close(cfd);
	epoll_pair_close(&pp);
}
