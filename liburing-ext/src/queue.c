/* SPDX-License-Identifier: MIT */
/*
 * queue.c: the slow path — enter the kernel to take over connections.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "spillway.h"
#include "syscall.h"

int spw_enter(struct spw_ring *ring, unsigned wait_nr,
	      const struct __kernel_timespec *ts)
{
	return spw_enter_max(ring, 0, wait_nr, ts);
}

int spw_enter_max(struct spw_ring *ring, unsigned max, unsigned wait_nr,
		  const struct __kernel_timespec *ts)
{
	struct spw_enter args;
	int ret;

	memset(&args, 0, sizeof(args));
	args.min_complete = wait_nr;
	args.max_post = max;
	args.accept_flags = ring->accept_flags;
	if (ts) {
		if (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000)
			return -EINVAL;
		args.flags |= SPW_ENTER_F_TIMEOUT;
		/*
		 * Saturate: INT64_MAX seconds is a common "forever", and its
		 * product with 10^9 would overflow into a negative timeout.
		 * INT64_MAX ns (292 years) waits as long as anything can.
		 */
		if (ts->tv_sec >= INT64_MAX / 1000000000LL)
			args.timeout_ns = INT64_MAX;
		else
			args.timeout_ns = ts->tv_sec * 1000000000LL + ts->tv_nsec;
	}
	args.owner = ring->owner;
	ret = __spw_ioctl(ring->ring_fd, SPW_IOC_ENTER, &args);
	/*
	 * The kernel writes our owner id when it changed (our first enter,
	 * also one that then timed out); otherwise args.owner is ours still.
	 */
	ring->owner = args.owner;
	return ret;
}

int spw_wait_cqes(struct spw_ring *ring, struct spw_cqe **cqe_ptr,
		  unsigned wait_nr, const struct __kernel_timespec *ts)
{
	int ret;

	for (;;) {
		ret = spw_enter(ring, wait_nr, ts);
		if (ret == -EINTR && !ts)
			continue;
		if (ret < 0)
			return ret;
		if (!spw_peek_cqe(ring, cqe_ptr))
			return 0;
		/* woken with nothing for us (a sibling thread took it) */
		if (ts)
			return -ETIME;
	}
}

int spw_group_stats_full(int group_fd, struct spw_group_stats *st,
			 struct spw_member_stats *out, unsigned nr)
{
	memset(st, 0, sizeof(*st));
	st->members = (unsigned long)out;
	st->nr = out ? nr : 0;
	return __spw_ioctl(group_fd, SPW_IOC_GROUP_STATS, st);
}

int spw_group_stats(int group_fd, struct spw_member_stats *out, unsigned nr)
{
	struct spw_group_stats st;

	return spw_group_stats_full(group_fd, &st, out, nr);
}
