/* SPDX-License-Identifier: MIT */
/*
 * bh-off: how long the module keeps bottom halves off when a full ring's
 * waiting connections move, measured by the kernel's preemptoff tracer
 * (CONFIG_PREEMPT_TRACER, the debug kernels). Not a test: a measurement,
 * run by tests/kernel/measure-bh-off in a debug guest, written as JSON for
 * docs/results/bh-off/ (docs/reliability.md, "BH-off sections").
 *
 *   bh-off OUT.json LABEL [N]
 *
 * N connections (default 32768, SPW_MAX_RING_ENTRIES) wait on ring 0 of a
 * two-member group; then
 *   rehome: ring 0 closes, and all N move to ring 1 (one close);
 *   steal:  ring 0's consumer stopped entering (stall detection, 20 ms),
 *           and ring 1's consumer steals from it in one enter that hands
 *           over a single connection (max_post 1).
 * For each, the tracer's longest preempt-off section (bottom halves off
 * count: local_bh_disable() raises the preempt count) while it ran, and
 * where that section started and ended.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "spillway.h"

#define TR "/sys/kernel/tracing/"

static void die(const char *what)
{
	fprintf(stderr, "bh-off: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void put(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_TRUNC);

	if (fd < 0 || write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		die(path);
	close(fd);
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int listener(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (void *)&sin, sizeof(sin)) || listen(fd, 65535))
		die("listener");
	return fd;
}

static unsigned short port_of(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	if (getsockname(fd, (void *)&sin, &len))
		die("getsockname");
	return ntohs(sin.sin_port);
}

/* @n clients of @port: their fds (the connections wait on the member). */
static int *connect_n(unsigned short port, unsigned n)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int *fds = calloc(n, sizeof(*fds));

	for (unsigned i = 0; fds && i < n; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fds[i] < 0 || connect(fds[i], (void *)&sin, sizeof(sin)))
			die("connect");
	}
	return fds;
}

static void wait_pending(int gfd, unsigned m, unsigned n)
{
	struct spw_member_stats ms[2];

	for (long end = now_ms() + 120000; now_ms() < end; usleep(20000)) {
		if (spw_group_stats(gfd, ms, 2) != 2)
			die("stats");
		if (ms[m].pending == n)
			return;
	}
	fprintf(stderr, "bh-off: member %u has %u pending, want %u\n", m, ms[m].pending, n);
	exit(1);
}

/* Start a fresh maximum of the preemptoff tracer. */
static void trace_start(void)
{
	put(TR "tracing_on", "0");
	put(TR "current_tracer", "preemptoff");
	put(TR "tracing_max_latency", "0");
	put(TR "tracing_on", "1");
}

/*
 * The longest section since trace_start(), in microseconds, and where it
 * started and ended (the trace header's "=> started at:" lines).
 */
static long trace_stop(char *started, char *ended, size_t len)
{
	char line[512];
	long us = -1;
	FILE *f;

	put(TR "tracing_on", "0");
	f = fopen(TR "tracing_max_latency", "r");
	if (!f || fscanf(f, "%ld", &us) != 1)
		die("tracing_max_latency");
	fclose(f);
	snprintf(started, len, "?");
	snprintf(ended, len, "?");
	f = fopen(TR "trace", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *p;

		line[strcspn(line, "\n")] = 0;
		if ((p = strstr(line, "=> started at: ")))
			snprintf(started, len, "%s", p + 15);
		else if ((p = strstr(line, "=> ended at:   ")))
			snprintf(ended, len, "%s", p + 15);
		else if ((p = strstr(line, "=> ended at: ")))
			snprintf(ended, len, "%s", p + 13);
	}
	if (f)
		fclose(f);
	put(TR "current_tracer", "nop");
	return us;
}

static void srcversion(char *buf, size_t len)
{
	FILE *f = fopen("/sys/module/spillway/srcversion", "r");

	if (!f || !fgets(buf, len, f))
		snprintf(buf, len, "?");
	buf[strcspn(buf, "\n")] = 0;
	if (f)
		fclose(f);
}

int main(int argc, char **argv)
{
	unsigned n = argc > 3 ? (unsigned)atoi(argv[3]) : SPW_MAX_RING_ENTRIES;
	struct rlimit rl = { .rlim_cur = 2 * n + 256, .rlim_max = 2 * n + 256 };
	char s1[256], e1[256], s2[256], e2[256], sv[64];
	long rehome_us, steal_us, t0, rehome_ms, steal_ms;
	struct spw_ring r0, r1;
	struct utsname u;
	int lfd[2], gfd, *cfd, ret;
	FILE *out;

	if (argc < 3) {
		fprintf(stderr, "usage: bh-off OUT.json LABEL [N]\n");
		return 2;
	}
	if (setrlimit(RLIMIT_NOFILE, &rl))
		die("setrlimit");
	put("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535");
	put("/proc/sys/net/core/somaxconn", "65535");
	put("/proc/sys/net/ipv4/tcp_max_syn_backlog", "65535");

	/* rehome: N tokens on ring 0, then ring 0 closes */
	lfd[0] = listener();
	lfd[1] = listener();
	gfd = spw_group_create(lfd, 2, &(struct spw_group_params){
		.ring_entries = SPW_MAX_RING_ENTRIES, .stall_ms = SPW_STALL_OFF,
		.policy = SPW_POLICY_ORIGIN });
	if (gfd < 0 || spw_ring_init(&r0, spw_ring_open(gfd, 0)) ||
	    spw_ring_init(&r1, spw_ring_open(gfd, 1)))
		die("group");
	t0 = now_ms();
	cfd = connect_n(port_of(lfd[0]), n);
	wait_pending(gfd, 0, n);
	fprintf(stderr, "bh-off: %u connections waiting after %ld ms\n", n, now_ms() - t0);
	trace_start();
	t0 = now_ms();
	spw_ring_exit(&r0);
	rehome_ms = now_ms() - t0;
	rehome_us = trace_stop(s1, e1, sizeof(s1));
	wait_pending(gfd, 1, n);
	fprintf(stderr, "bh-off: rehome of %u: longest section %ld us (%s .. %s)\n", n,
		rehome_us, s1, e1);
	for (unsigned i = 0; i < n; i++)
		close(cfd[i]);
	free(cfd);
	spw_ring_exit(&r1);
	close(gfd);

	/* steal: N tokens behind a consumer that stopped entering */
	gfd = spw_group_create(lfd, 2, &(struct spw_group_params){
		.ring_entries = SPW_MAX_RING_ENTRIES, .stall_ms = 20,
		.policy = SPW_POLICY_ORIGIN });
	if (gfd < 0 || spw_ring_init(&r0, spw_ring_open(gfd, 0)) ||
	    spw_ring_init(&r1, spw_ring_open(gfd, 1)))
		die("group");
	cfd = connect_n(port_of(lfd[0]), n);
	wait_pending(gfd, 0, n);
	usleep(200000);		/* ten stall times: ring 0 is stalled */
	trace_start();
	t0 = now_ms();
	ret = spw_enter_max(&r1, 1, 1, &(struct __kernel_timespec){ .tv_sec = 10 });
	steal_ms = now_ms() - t0;
	steal_us = trace_stop(s2, e2, sizeof(s2));
	fprintf(stderr, "bh-off: steal (enter returned %d): longest section %ld us (%s .. %s)\n",
		ret, steal_us, s2, e2);
	for (unsigned i = 0; i < n; i++)
		close(cfd[i]);
	free(cfd);
	spw_ring_exit(&r0);
	spw_ring_exit(&r1);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);

	uname(&u);
	srcversion(sv, sizeof(sv));
	out = fopen(argv[1], "w");
	if (!out)
		die(argv[1]);
	fprintf(out, "{\n  \"label\": \"%s\",\n  \"kernel\": \"%s\",\n  \"srcversion\": \"%s\",\n"
		"  \"tokens\": %u,\n"
		"  \"rehome\": {\"max_us\": %ld, \"call_ms\": %ld, \"started\": \"%s\", \"ended\": \"%s\"},\n"
		"  \"steal\": {\"max_us\": %ld, \"call_ms\": %ld, \"started\": \"%s\", \"ended\": \"%s\", \"enter\": %d}\n}\n",
		argv[2], u.release, sv, n, rehome_us, rehome_ms, s1, e1, steal_us, steal_ms,
		s2, e2, ret);
	fclose(out);
	return 0;
}
