/* SPDX-License-Identifier: MIT */
/*
 * policy-bench: cost of the placement decision (kmod/spw_policy.c, the
 * module's own source) as the group grows from 2 to 1024 members, for
 * each policy.
 *
 *   room   the origin has room and nobody is less loaded: the common case
 *   spill  the origin is full; siblings are loaded unevenly, and the ring
 *          that takes each connection is given back (its consumer took it)
 *          so the group's shape stays the same
 *
 * The module keeps a summary of where each ring stands (spw_policy.h), so
 * no decision scans the group: the cost should not grow with N. Prints a
 * table and, with -o FILE, JSON. Times are host nanoseconds per decision
 * including the re-filing the module does after it; they compare N with
 * N and policy with policy, not a kernel measurement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spw_policy.h"

#define MAX_N 1024

static unsigned heads[MAX_N];
static struct spw_ring_acct rings[MAX_N];
static struct spw_policy pol;
static unsigned long mem[4096];
static volatile int sink;
static const struct spw_clock never = { .now = 0, .stall = SPW_STALL_NEVER };
static const char *const names[] = { "", "origin", "least", "p2c", "cpu" };

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void setup(unsigned n, unsigned kind, unsigned origin_pending)
{
	spw_policy_init(&pol, mem, n, kind, 0, 64, 1);
	for (unsigned i = 0; i < n; i++) {
		heads[i] = 0;
		rings[i] = (struct spw_ring_acct){
			.entries = 64, .live = 1, .khead = &heads[i], .waiting = 1,
			.pending = i ? 1 + (i * 2654435761u >> 7) % 40 : origin_pending,
		};
		spw_sum_refile(&pol, rings, i, &never);
	}
}

/* One decision as the module makes it: pick, queue, re-file; then the
 * consumer takes it (re-filed again), keeping the shape. */
static double measure(unsigned n)
{
	unsigned iters = 400000;
	double t0, best = 1e30;

	for (int rep = 0; rep < 5; rep++) {
		t0 = now_ns();
		for (unsigned k = 0; k < iters; k++) {
			int t = spw_pick_ring(&pol, rings, 0, k % n, &never);

			if (t >= 0) {
				rings[t].pending++;
				spw_sum_refile(&pol, rings, t, &never);
				rings[t].pending--;
				spw_sum_refile(&pol, rings, t, &never);
			}
			sink = t;
		}
		double per = (now_ns() - t0) / iters;
		if (per < best)
			best = per;
	}
	(void)n;
	return best;
}

int main(int argc, char **argv)
{
	FILE *json = NULL;
	int first = 1;

	if (argc == 3 && !strcmp(argv[1], "-o"))
		json = fopen(argv[2], "w");
	printf("%6s %8s %12s %12s\n", "N", "policy", "room", "spill");
	if (json)
		fprintf(json, "{\"unit\": \"ns per decision\", \"rows\": [");
	for (unsigned n = 2; n <= MAX_N; n *= 2) {
		for (unsigned kind = SPW_KIND_ORIGIN; kind <= SPW_KIND_CPU; kind++) {
			double room, spill;

			setup(n, kind, 0);
			room = measure(n);
			setup(n, kind, 64);
			spill = measure(n);
			printf("%6u %8s %9.1f ns %9.1f ns\n", n, names[kind], room, spill);
			if (json)
				fprintf(json, "%s{\"n\": %u, \"policy\": \"%s\", \"room\": %.2f, \"spill\": %.2f}",
					first ? "" : ", ", n, names[kind], room, spill);
			first = 0;
		}
	}
	if (json) {
		fprintf(json, "]}\n");
		fclose(json);
	}
	return 0;
}
