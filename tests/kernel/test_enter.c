/* SPDX-License-Identifier: MIT */
/*
 * test_enter: what SPW_IOC_ENTER promises its caller, beyond handing over:
 *  - a timed wait ends: a periodic signal under SA_RESTART cannot keep an
 *    enter with a timeout from ever returning (it returns -EINTR, as
 *    epoll_wait() does, or -ETIME);
 *  - a consumer that cannot take a connection (at its fd limit) gets the
 *    error, and the connections waiting for it go to a sibling that can:
 *    none waits behind it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static volatile sig_atomic_t ticks;

static void on_alarm(int sig)
{
	(void)sig;
	ticks++;
}

/*
 * A signal every 5 ms, SA_RESTART, and an enter that waits 300 ms for a
 * connection that never comes. The module restarted the wait with the
 * whole relative timeout after each signal, so the call never returned;
 * now it returns -EINTR (the library passes it on for a timed wait).
 */
Test(enter, a_periodic_signal_cannot_defer_a_timeout, .timeout = 20)
{
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
	struct itimerval it = { .it_interval = { .tv_usec = 5000 },
				.it_value = { .tv_usec = 5000 } };
	struct __kernel_timespec ts = { .tv_nsec = 300000000 };
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 4);
	struct spw_ring ring;
	long t0, ms;
	int ret;

	t_ring(&ring, gfd, 0);
	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGALRM, &sa, NULL), 0);
	cr_assert_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
	t0 = t_now_ms();
	ret = spw_enter(&ring, 1, &ts);
	ms = t_now_ms() - t0;
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	signal(SIGALRM, SIG_DFL);
	cr_expect(ret == -EINTR || ret == -ETIME, "enter returned %d (%s)", ret,
		  ret < 0 ? strerror(-ret) : "");
	cr_expect_lt(ms, 5000, "a 300 ms wait took %ld ms", ms);
	cr_log_info("returned %d after %ld ms and %d signals", ret, ms, (int)ticks);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
}

/*
 * Lower RLIMIT_NOFILE to the lowest free fd (every fd below it is open):
 * the next fd fails with EMFILE. For a forked child (no Criterion asserts
 * there); false if it did not work.
 */
static bool use_up_fds(void)
{
	struct rlimit rl;
	int fd = dup(0);

	if (fd < 0 || close(fd) || getrlimit(RLIMIT_NOFILE, &rl))
		return false;
	rl.rlim_cur = fd;
	return !setrlimit(RLIMIT_NOFILE, &rl) && dup(0) < 0 && errno == EMFILE;
}

/*
 * Worker A (a process of its own) has no fd left and keeps entering its
 * ring; worker B waits on its own. Four connections arrive on A's
 * member. A's enter fails with EMFILE, and the connections must reach B
 * (A kept entering, so it counted as responsive and nothing was stolen:
 * they waited behind A for as long as A could not take them).
 */
Test(enter, a_worker_out_of_fds_lets_a_sibling_serve, .timeout = 60)
{
	int lfd[2], cfd[4], gfd, sv[2], status;
	struct spw_cqe out[4];
	struct spw_ring b;
	unsigned got;
	pid_t pid;
	char c;

	t_listeners(lfd, 2, false, 16);
	/* ORIGIN: A's member's connections go to A's ring first */
	gfd = t_group_policy(lfd, 2, 8, 0, SPW_POLICY_ORIGIN, 0);
	t_ring(&b, gfd, 1);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		struct spw_ring a;
		int rfd = spw_ring_open(gfd, 0), emfile = 0;

		if (rfd < 0 || spw_ring_init(&a, rfd) || !use_up_fds())
			_exit(2);
		if (write(sv[1], "r", 1) != 1)
			_exit(3);
		/* enter for 3 s, as a worker's loop would */
		for (long end = t_now_ms() + 3000; t_now_ms() < end;) {
			struct __kernel_timespec ts = { .tv_nsec = 20000000 };
			int ret = spw_enter(&a, 1, &ts);

			if (ret == -EMFILE)
				emfile++;
			else if (ret < 0 && ret != -ETIME)
				_exit(4);
			else if (ret > 0)
				_exit(5);	/* it cannot have taken one */
		}
		c = (char)(emfile > 0);
		_exit(write(sv[1], &c, 1) == 1 ? 0 : 6);
	}
	cr_assert_eq(read(sv[0], &c, 1), 1);
	for (unsigned i = 0; i < 4; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	got = t_reap(&b, 4, 2000, out);
	cr_expect_eq(got, 4u, "%u of 4 reached the sibling: the others waited behind "
		     "the worker out of fds", got);
	for (unsigned i = 0; i < got; i++) {
		cr_expect_eq(out[i].origin, 0u);
		cr_expect(out[i].flags & SPW_CQE_F_SPILLED);
		cr_expect_lt(t_read_id(out[i].fd), 4u);
		close(out[i].fd);
	}
	cr_assert_eq(read(sv[0], &c, 1), 1);
	cr_expect_eq(c, 1, "the worker out of fds never got EMFILE");
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "worker A: %#x", status);
	for (unsigned i = 0; i < 4; i++)
		close(cfd[i]);
	close(sv[0]);
	close(sv[1]);
	spw_ring_exit(&b);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}
