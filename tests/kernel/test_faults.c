/* SPDX-License-Identifier: MIT */
/*
 * test_faults: every allocation of group create, ring open and enter fails
 * in turn (fault injection: /proc/thread-self/fail-nth with failslab and
 * fail_page_alloc, as syzkaller does), and each failure returns a clean
 * error with nothing leaked (run-checked: live_groups back to 0), no
 * connection lost and no kernel report (the vm runner). Before the fix, a
 * failure half-way through group allocation freed arrays that did not
 * exist: a NULL dereference.
 *
 * Needs CONFIG_FAULT_INJECTION (the debug kernels); skipped elsewhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

static void dbg_write(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);

	if (fd < 0)
		return;	/* that fault type is not built in */
	cr_assert_eq(write(fd, val, strlen(val)), (ssize_t)strlen(val), "%s", path);
	close(fd);
}

static int fail_nth_fd(void)
{
	int fd = open("/proc/thread-self/fail-nth", O_RDWR);

	if (fd < 0)
		cr_skip_test("no fault injection in this kernel");
	/* fail GFP_KERNEL allocations too, quietly, pages of any order */
	dbg_write("/sys/kernel/debug/failslab/ignore-gfp-wait", "N");
	dbg_write("/sys/kernel/debug/failslab/verbose", "0");
	dbg_write("/sys/kernel/debug/fail_page_alloc/ignore-gfp-wait", "N");
	dbg_write("/sys/kernel/debug/fail_page_alloc/ignore-gfp-highmem", "N");
	dbg_write("/sys/kernel/debug/fail_page_alloc/min-order", "0");
	dbg_write("/sys/kernel/debug/fail_page_alloc/verbose", "0");
	return fd;
}

/* Arm: the @nth allocation from now on fails. */
static void fail_nth(int fd, int nth)
{
	char buf[16];
	int n = snprintf(buf, sizeof(buf), "%d", nth);

	cr_assert_eq(pwrite(fd, buf, n, 0), n);
}

/* Disarm and say whether the armed fault was injected. */
static bool fail_nth_fired(int fd)
{
	char buf[16] = "";

	cr_assert_gt(pread(fd, buf, sizeof(buf) - 1, 0), 0);
	fail_nth(fd, 0);
	return atoi(buf) == 0;
}

Test(faults, every_create_and_open_allocation_fails_cleanly, .timeout = 300)
{
	int fd = fail_nth_fd();
	int lfd[4], injected = 0;

	t_listeners(lfd, 4, true, 16);
	for (int nth = 1; nth < 500; nth++) {
		struct spw_group_params p = { .ring_entries = 4096, .stall_ms = 0 };
		int gfd, rfd = 0;
		bool fired;

		fail_nth(fd, nth);
		gfd = spw_group_create(lfd, 4, &p);
		if (gfd >= 0)
			rfd = spw_ring_open(gfd, nth % 4);
		fired = fail_nth_fired(fd);
		if (gfd < 0)
			cr_expect_eq(gfd, -ENOMEM, "fault %d: create returned %d", nth, gfd);
		if (rfd < 0)
			cr_expect_eq(rfd, -ENOMEM, "fault %d: ring open returned %d", nth, rfd);
		if (rfd > 0)
			close(rfd);
		if (gfd >= 0)
			close(gfd);
		if (!fired)
			break;	/* every allocation of both calls has failed once */
		injected++;
	}
	cr_expect_gt(injected, 3, "only %d faults injected", injected);
	/* and the listeners still serve, through a fresh group */
	int gfd = t_group(lfd, 4, 8), cfd = t_connect_id(t_port(lfd[0]), 7);
	struct spw_ring r[4];
	unsigned got = 0;

	for (unsigned i = 0; i < 4; i++)
		t_ring(&r[i], gfd, i);
	for (unsigned i = 0; i < 4; i++)
		got += t_reap(&r[i], 1 - got, got ? 0 : 1000, NULL);
	cr_expect_eq(got, 1u);
	close(cfd);
	for (unsigned i = 0; i < 4; i++) {
		spw_ring_exit(&r[i]);
		close(lfd[i]);
	}
	close(gfd);
	close(fd);
}

/*
 * Every allocation of an enter fails in turn, with one connection waiting
 * for the ring. A failure may end that enter with an error, but it must
 * not cost the connection: the next enter hands it over. The socket's
 * file used to be allocated after the connection was taken off the
 * listener's queue, and when that failed the connection was closed (a
 * FIN, not even a reset) and counted as dropped. Now everything that can
 * fail comes before the accept, as in accept4().
 */
Test(faults, every_enter_allocation_fails_cleanly, .timeout = 300)
{
	int fd = fail_nth_fd();
	int lfd = t_listener(AF_INET, 0, false, 16);
	int gfd = t_group(&lfd, 1, 8), injected = 0;
	struct spw_ring ring;

	t_ring(&ring, gfd, 0);
	for (int nth = 1; nth < 200; nth++) {
		int cfd = t_connect_id(t_port(lfd), (uint32_t)nth), ret;
		struct spw_member_stats ms;
		struct spw_cqe cqe = { .fd = -1 };
		bool fired;

		/* the connection waits for the ring */
		for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(2000)) {
			cr_assert_eq(spw_group_stats(gfd, &ms, 1), 1);
			if (ms.pending == 1)
				break;
		}
		cr_assert_eq(ms.pending, 1u);
		fail_nth(fd, nth);
		ret = spw_enter(&ring, 0, NULL);
		fired = fail_nth_fired(fd);
		if (ret < 0)
			cr_expect(ret == -ENOMEM || ret == -EMFILE || ret == -ENFILE,
				  "fault %d: enter returned %d", nth, ret);
		/* whatever failed, the connection is there to take */
		cr_expect_eq(t_reap(&ring, 1, 3000, &cqe), 1u,
			     "fault %d: the connection is lost (enter returned %d)", nth, ret);
		if (cqe.fd > 0) {
			cr_expect_eq(t_read_id(cqe.fd), (uint32_t)nth);
			close(cqe.fd);
		}
		close(cfd);
		cr_assert_eq(spw_group_stats(gfd, &ms, 1), 1);
		cr_expect_eq(ms.dropped, 0u, "fault %d: a connection was dropped", nth);
		if (!fired)
			break;	/* every allocation of an enter has failed once */
		injected++;
	}
	cr_expect_gt(injected, 2, "only %d faults injected", injected);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
	close(fd);
}
