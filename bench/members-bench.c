/* SPDX-License-Identifier: MIT */
/*
 * members-bench: what the module's placement costs per connection as the
 * group grows, in a real kernel (run it in a guest with the module loaded).
 *
 *   spw-members-bench [-n 4,64,1024] [-c CONNECTIONS] [-r REPEATS]
 *                     [-p origin,least,p2c,cpu] [-o FILE.json]
 *
 * For each member count N it makes N SO_REUSEPORT listeners on one
 * loopback port and connects CONNECTIONS times (blocking connect(), one
 * after the other, every connection kept open), first with the listeners
 * plain ("plain": the kernel's reuseport hash alone) and then once per
 * policy with the listeners in a spillway group. On loopback the
 * handshake's last ACK, and so the module's placement of the connection,
 * runs in softirq on the connecting CPU before connect() returns, so the
 * time per connect() carries the placement decision. Nobody consumes:
 * rings stay unopened (they take work), each ring has room for every
 * connection (or, at 1024 members, for 256: the module's bound on a
 * group's slots, still far more than lands on one), stall detection is
 * off, and a run with a connection dropped is void, so every decision
 * sees the same shape of group in every run.
 *
 * Reported per N and mode: the median time per connect() over the
 * repeats, its spread (min..max), and the module's cost: the mode's median
 * minus plain's median at the same N. The O(1) claim holds when that cost
 * does not grow from 4 to 1024 members. Guest TCG timings are noisy: the
 * modes run interleaved within each repeat, and what matters is the
 * comparison within the run, never an absolute figure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
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

#define MAX_COUNTS	8
#define MAX_MODES	5	/* plain + the four policies */
#define MAX_REPEATS	32

static const char *const mode_names[MAX_MODES] = {
	"plain", "origin", "least", "p2c", "cpu",
};
static const unsigned mode_policy[MAX_MODES] = {
	0, SPW_POLICY_ORIGIN, SPW_POLICY_LEAST, SPW_POLICY_P2C, SPW_POLICY_CPU,
};

static void die(const char *what, int err)
{
	fprintf(stderr, "members-bench: %s: %s\n", what, strerror(err));
	exit(1);
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* @n listeners on one ephemeral loopback port; returns the port. */
static unsigned short make_listeners(int *fds, unsigned n, int backlog)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int one = 1;

	for (unsigned i = 0; i < n; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fds[i] < 0)
			die("socket", errno);
		if (setsockopt(fds[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)))
			die("SO_REUSEPORT", errno);
		if (bind(fds[i], (struct sockaddr *)&a, sizeof(a)))
			die("bind", errno);
		if (!i && getsockname(fds[0], (struct sockaddr *)&a, &len))
			die("getsockname", errno);
		if (listen(fds[i], backlog))
			die("listen", errno);
	}
	return ntohs(a.sin_port);
}

/* One run: microseconds per connect() of @conns connections. */
static double run_one(unsigned n, unsigned mode, unsigned conns)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int *lfd = calloc(n, sizeof(int)), *cfd = calloc(conns, sizeof(int));
	int gfd = -1;
	double t0, t1;

	if (!lfd || !cfd)
		die("calloc", ENOMEM);
	/* every connection waits in its origin's accept queue until the end */
	a.sin_port = htons(make_listeners(lfd, n, (int)conns));
	if (mode) {
		struct spw_group_params p = {
			.ring_entries = 1,
			.stall_ms = SPW_STALL_OFF,
			.policy = mode_policy[mode],
		};

		/* room for every connection, within the module's group-wide
		 * bound of 2^18 slots (members x entries) */
		while (p.ring_entries < conns && (p.ring_entries << 1) * n <= 1U << 18)
			p.ring_entries <<= 1;
		gfd = spw_group_create(lfd, n, &p);
		if (gfd < 0)
			die("spw_group_create", -gfd);
	}
	t0 = now_us();
	for (unsigned i = 0; i < conns; i++) {
		cfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (cfd[i] < 0)
			die("socket (client)", errno);
		if (connect(cfd[i], (struct sockaddr *)&a, sizeof(a)))
			die("connect", errno);
	}
	t1 = now_us();
	if (mode) {
		struct spw_member_stats *ms = calloc(n, sizeof(*ms));
		unsigned long long arrived = 0, dropped = 0;

		if (!ms || spw_group_stats(gfd, ms, n) != (int)n)
			die("spw_group_stats", errno);
		for (unsigned i = 0; i < n; i++) {
			arrived += ms[i].arrived;
			dropped += ms[i].dropped;
		}
		/* a run where the module did not place every connection is void */
		if (arrived != conns || dropped) {
			fprintf(stderr, "members-bench: n=%u %s: arrived %llu dropped %llu of %u\n",
				n, mode_names[mode], arrived, dropped, conns);
			exit(1);
		}
		free(ms);
		close(gfd);
	}
	for (unsigned i = 0; i < conns; i++)
		close(cfd[i]);
	for (unsigned i = 0; i < n; i++)
		close(lfd[i]);
	free(cfd);
	free(lfd);
	return (t1 - t0) / conns;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(const double *v, unsigned n)
{
	double s[MAX_REPEATS];

	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static unsigned parse_list(const char *arg, unsigned *out, unsigned max)
{
	char *copy = strdup(arg), *save = NULL, *tok;
	unsigned k = 0;

	for (tok = strtok_r(copy, ",", &save); tok && k < max;
	     tok = strtok_r(NULL, ",", &save))
		out[k++] = (unsigned)strtoul(tok, NULL, 0);
	free(copy);
	return k;
}

int main(int argc, char **argv)
{
	unsigned counts[MAX_COUNTS] = { 4, 64, 1024 }, nc = 3;
	unsigned modes[MAX_MODES] = { 0, 1, 2, 3, 4 }, nm = MAX_MODES;
	unsigned conns = 1000, repeats = 5;
	static double us[MAX_COUNTS][MAX_MODES][MAX_REPEATS];
	const char *out = NULL;
	struct rlimit rl;
	struct utsname u;
	FILE *f;
	int opt;

	while ((opt = getopt(argc, argv, "n:c:r:p:o:h")) != -1) {
		switch (opt) {
		case 'n':
			nc = parse_list(optarg, counts, MAX_COUNTS);
			break;
		case 'c':
			conns = (unsigned)strtoul(optarg, NULL, 0);
			break;
		case 'r':
			repeats = (unsigned)strtoul(optarg, NULL, 0);
			break;
		case 'p': {
			char *copy = strdup(optarg), *save = NULL, *tok;

			nm = 1;	/* plain always runs: it is the baseline */
			for (tok = strtok_r(copy, ",", &save); tok;
			     tok = strtok_r(NULL, ",", &save))
				for (unsigned m = 1; m < MAX_MODES; m++)
					if (!strcmp(tok, mode_names[m]) && nm < MAX_MODES)
						modes[nm++] = m;
			free(copy);
			break;
		}
		case 'o':
			out = optarg;
			break;
		default:
			fprintf(stderr, "usage: %s [-n 4,64,1024] [-c CONNECTIONS] [-r REPEATS] "
				"[-p origin,least,p2c,cpu] [-o FILE.json]\n", argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (!nc || !conns || conns > SPW_MAX_RING_ENTRIES || !repeats ||
	    repeats > MAX_REPEATS) {
		fprintf(stderr, "members-bench: bad arguments\n");
		return 2;
	}
	for (unsigned i = 0; i < nc; i++)
		if (!counts[i] || counts[i] > SPW_MAX_MEMBERS) {
			fprintf(stderr, "members-bench: members must be 1..%u\n", SPW_MAX_MEMBERS);
			return 2;
		}
	/* listeners + kept-open clients + their accepted children */
	rl.rlim_cur = rl.rlim_max = 2 * conns + 2 * SPW_MAX_MEMBERS + 64;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		die("setrlimit(RLIMIT_NOFILE)", errno);

	/* one warm-up run: first-touch allocations, caches */
	run_one(counts[nc - 1], modes[nm - 1], conns);
	for (unsigned r = 0; r < repeats; r++)
		for (unsigned i = 0; i < nc; i++)
			for (unsigned m = 0; m < nm; m++)
				us[i][m][r] = run_one(counts[i], modes[m], conns);

	printf("%8s %8s %12s %20s %14s\n", "members", "mode", "us/connect",
	       "spread (min..max)", "module cost");
	for (unsigned i = 0; i < nc; i++) {
		double base = median(us[i][0], repeats);

		for (unsigned m = 0; m < nm; m++) {
			double med = median(us[i][m], repeats), lo = 1e18, hi = 0;

			for (unsigned r = 0; r < repeats; r++) {
				lo = us[i][m][r] < lo ? us[i][m][r] : lo;
				hi = us[i][m][r] > hi ? us[i][m][r] : hi;
			}
			printf("%8u %8s %12.1f %9.1f..%-9.1f", counts[i],
			       mode_names[modes[m]], med, lo, hi);
			if (m)
				printf(" %+13.1f\n", med - base);
			else
				printf(" %13s\n", "-");
		}
	}
	if (!out)
		return 0;
	f = fopen(out, "w");
	if (!f)
		die(out, errno);
	uname(&u);
	fprintf(f, "{\n  \"kernel\": \"%s\",\n  \"connections\": %u,\n  \"repeats\": %u,\n"
		"  \"unit\": \"microseconds per connect()\",\n  \"runs\": [\n",
		u.release, conns, repeats);
	for (unsigned i = 0; i < nc; i++)
		for (unsigned m = 0; m < nm; m++) {
			fprintf(f, "    {\"members\": %u, \"mode\": \"%s\", \"us\": [",
				counts[i], mode_names[modes[m]]);
			for (unsigned r = 0; r < repeats; r++)
				fprintf(f, "%s%.2f", r ? ", " : "", us[i][m][r]);
			fprintf(f, "]}%s\n", i == nc - 1 && m == nm - 1 ? "" : ",");
		}
	fprintf(f, "  ]\n}\n");
	fclose(f);
	return 0;
}
