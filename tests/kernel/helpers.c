/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "loopback.h"

long t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool t_debug_kernel(void)
{
	struct utsname u;

	/* CONFIG_LOCALVERSION of tests/vm/debug-kernel.config */
	return uname(&u) == 0 && strstr(u.release, "-spw-debug") != NULL;
}

bool t_write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = write(fd, val, strlen(val)) == (ssize_t)strlen(val);
	close(fd);
	cr_assert(ok, "write %s to %s: %s", val, path, strerror(errno));
	return true;
}

bool t_lock_stat_reset(void)
{
	if (access("/proc/lock_stat", W_OK))
		return false;
	t_write_file("/proc/sys/kernel/lock_stat", "1");
	return t_write_file("/proc/lock_stat", "0");
}

/*
 * One class's line of /proc/lock_stat: "%40s:" and then con-bounces,
 * contentions, waittime min/max/total/avg, acq-bounces, acquisitions,
 * holdtime min/max/total/avg (kernel/locking/lockdep_proc.c). Sums
 * column @col over every class called @name (one per subclass or
 * version); -1 when there is none.
 */
static double t_lock_stat_col(const char *name, unsigned col, bool max)
{
	FILE *f = fopen("/proc/lock_stat", "r");
	char line[512];
	double sum = -1;

	cr_assert_not_null(f, "/proc/lock_stat: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':'), *p = line, *end;
		double v[12];
		unsigned n = 0;

		if (!colon)
			continue;
		while (*p == ' ')
			p++;
		if ((size_t)(colon - p) != strlen(name) || strncmp(p, name, colon - p))
			continue;
		for (p = colon + 1; n < 12; n++, p = end) {
			v[n] = strtod(p, &end);
			if (end == p)
				break;
		}
		if (n <= col)
			continue;
		if (sum < 0)
			sum = 0;
		sum = max ? (v[col] > sum ? v[col] : sum) : sum + v[col];
	}
	fclose(f);
	return sum;
}

long t_lock_acquisitions(const char *name)
{
	return (long)t_lock_stat_col(name, 7, false);
}

double t_lock_holdtime_max(const char *name)
{
	return t_lock_stat_col(name, 9, true);
}

int t_listener(int family, uint16_t port, bool reuseport, int backlog)
{
	struct sockaddr_storage ss;
	socklen_t len = t_loopback(family, port, &ss);
	int one = 1;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
	cr_assert_eq(bind(fd, (void *)&ss, len), 0, "bind: %s", strerror(errno));
	cr_assert_eq(listen(fd, backlog), 0);
	return fd;
}

uint16_t t_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	cr_assert_eq(getsockname(fd, (void *)&ss, &len), 0);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void t_listeners(int *fds, unsigned n, bool same_port, int backlog)
{
	fds[0] = t_listener(AF_INET, 0, same_port, backlog);
	for (unsigned i = 1; i < n; i++)
		fds[i] = t_listener(AF_INET, same_port ? t_port(fds[0]) : 0,
				    same_port, backlog);
}

int t_connect(int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = t_loopback(family, port, &ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (void *)&ss, len), 0, "connect: %s", strerror(errno));
	return fd;
}

int t_try_connect(uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = t_loopback(AF_INET, port, &ss);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	if (connect(fd, (void *)&ss, len)) {
		cr_assert_eq(errno, ECONNRESET, "connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int t_connect_id(uint16_t port, uint32_t id)
{
	int fd = t_connect(AF_INET, port);

	cr_assert_eq(send(fd, &id, sizeof(id), MSG_NOSIGNAL), (ssize_t)sizeof(id),
		     "send id %u: %s", id, strerror(errno));
	return fd;
}

uint32_t t_read_id(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint32_t id = ~0u;

	cr_assert_eq(poll(&p, 1, 5000), 1, "no id within 5 s");
	cr_assert_eq(read(fd, &id, sizeof(id)), (ssize_t)sizeof(id));
	return id;
}

bool t_was_reset(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;

	if (poll(&p, 1, ms) != 1)
		return false;
	return read(fd, &c, 1) < 0 && errno == ECONNRESET;
}

int t_group_policy(const int *fds, unsigned n, unsigned entries,
		   unsigned stall_ms, unsigned policy, unsigned spill_at)
{
	struct spw_group_params p = {
		.ring_entries = entries, .stall_ms = stall_ms,
		.policy = policy, .spill_at = spill_at,
	};
	int gfd = spw_group_create(fds, n, &p);

	cr_assert_geq(gfd, 0, "spw_group_create: %s", strerror(-gfd));
	return gfd;
}

int t_group_stall(const int *fds, unsigned n, unsigned entries, unsigned stall_ms)
{
	return t_group_policy(fds, n, entries, stall_ms, SPW_POLICY_ORIGIN, 0);
}

int t_group(const int *fds, unsigned n, unsigned entries)
{
	return t_group_stall(fds, n, entries, SPW_STALL_OFF);
}

void t_ring(struct spw_ring *r, int gfd, unsigned m)
{
	int rfd = spw_ring_open(gfd, m);

	cr_assert_geq(rfd, 0, "spw_ring_open(%u): %s", m, strerror(-rfd));
	cr_assert_eq(spw_ring_init(r, rfd), 0);
}

unsigned t_reap(struct spw_ring *r, unsigned n, int ms, struct spw_cqe *out)
{
	long end = t_now_ms() + ms;
	unsigned got = 0;

	while (got < n) {
		struct spw_cqe *cqe;
		long left = end - t_now_ms();
		struct __kernel_timespec ts = { .tv_sec = left / 1000,
						.tv_nsec = (left % 1000) * 1000000 };

		if (left <= 0)
			break;
		if (spw_wait_cqe_timeout(r, &cqe, &ts))
			continue;
		if (out)
			out[got] = *cqe;
		else
			close(cqe->fd);
		got++;
		spw_cqe_seen(r, cqe);
	}
	return got;
}

unsigned t_drain(struct spw_ring *r)
{
	struct spw_cqe *cqe;
	unsigned head, n = 0;

	spw_for_each_cqe(r, head, cqe) {
		cr_expect_geq(cqe->fd, 0, "a CQE with fd %d", cqe->fd);
		close(cqe->fd);
		n++;
	}
	spw_cq_advance(r, n);
	return n;
}

static int t_sockstat_inuse(const char *path, const char *tag)
{
	char line[256];
	int inuse = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, tag, strlen(tag)))
			sscanf(line + strlen(tag), " inuse %d", &inuse);
	fclose(f);
	return inuse;
}

int t_tcp_inuse(void)
{
	return t_sockstat_inuse("/proc/net/sockstat", "TCP:") +
	       t_sockstat_inuse("/proc/net/sockstat6", "TCP6:");
}

void t_private_netns(void)
{
	struct ifreq ifr = { .ifr_name = "lo" };
	int fd;

	cr_assert_eq(unshare(CLONE_NEWNET), 0, "unshare(CLONE_NEWNET): %s",
		     strerror(errno));
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ioctl(fd, SIOCGIFFLAGS, &ifr), 0);
	ifr.ifr_flags |= IFF_UP;
	cr_assert_eq(ioctl(fd, SIOCSIFFLAGS, &ifr), 0, "lo up: %s",
		     strerror(errno));
	close(fd);
}
