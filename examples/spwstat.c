/* SPDX-License-Identifier: MIT */
/*
 * spwstat: print a running group's counters.
 *
 *   spwstat PID FD [INTERVAL_SECONDS]
 *
 * PID/FD name a group or ring fd in a running server (see
 * /proc/PID/fdinfo: spillway fds show "spw-members"). The fd is borrowed
 * with pidfd_getfd(2), which needs ptrace rights over PID (root or the
 * same user with ptrace_scope 0).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "spillway.h"

static const char *const state_name[] = { "new", "open", "closed" };

int main(int argc, char **argv)
{
	struct spw_member_stats ms[SPW_MAX_MEMBERS];
	struct spw_group_stats st;
	int pidfd, fd, n, interval;

	if (argc < 3) {
		fprintf(stderr, "usage: %s PID FD [INTERVAL]\n", argv[0]);
		return 2;
	}
	interval = argc > 3 ? atoi(argv[3]) : 0;
	pidfd = syscall(SYS_pidfd_open, atoi(argv[1]), 0);
	fd = pidfd < 0 ? -1 : syscall(SYS_pidfd_getfd, pidfd, atoi(argv[2]), 0);
	if (fd < 0) {
		perror("pidfd_getfd");
		return 1;
	}
	do {
		n = spw_group_stats_full(fd, &st, ms, SPW_MAX_MEMBERS);
		if (n < 0) {
			fprintf(stderr, "not a spillway fd: %s\n", strerror(-n));
			return 1;
		}
		printf("%-6s %-6s %10s %10s %10s %10s %8s %7s %5s\n", "member", "state",
		       "arrived", "delivered", "spill_out", "spill_in", "dropped",
		       "outst", "ring");
		for (int i = 0; i < n; i++)
			printf("%-6d %-6s %10llu %10llu %10llu %10llu %8llu %7u %5u\n", i,
			       ms[i].state < 3 ? state_name[ms[i].state] : "?",
			       (unsigned long long)ms[i].arrived,
			       (unsigned long long)ms[i].delivered,
			       (unsigned long long)ms[i].spilled_out,
			       (unsigned long long)ms[i].spilled_in,
			       (unsigned long long)ms[i].dropped, ms[i].outstanding,
			       ms[i].ring_entries);
		printf("%-6s %-6s %10llu %10llu %10llu %10llu %8llu %7u  stale %llu dropping %llu\n",
		       "total", "", (unsigned long long)st.total.arrived,
		       (unsigned long long)st.total.delivered,
		       (unsigned long long)st.total.spilled_out,
		       (unsigned long long)st.total.spilled_in,
		       (unsigned long long)st.total.dropped, st.total.outstanding,
		       (unsigned long long)st.stale, (unsigned long long)st.dropping);
		fflush(stdout);
		if (interval)
			sleep(interval);
	} while (interval);
	return 0;
}
