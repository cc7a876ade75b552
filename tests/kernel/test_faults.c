/* SPDX-License-Identifier: MIT */
/*
 * test_faults: every allocation of group create and ring open fails in
 * turn (fault injection: /proc/thread-self/fail-nth with failslab and
 * fail_page_alloc, as syzkaller does), and each failure returns a clean
 * -ENOMEM with nothing leaked (run-checked: live_groups back to 0) and no
 * kernel report (the vm runner). Before the fix, a failure half-way
 * through group allocation freed arrays that did not exist: a NULL
 * dereference.
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
