/* SPDX-License-Identifier: MIT */
/*
 * policy-bench: cost of the spill decision (kmod/spw_policy.c, the
 * module's own source) as the group grows from 2 to 1024 members.
 *
 *   origin-has-room  the common case: O(1)
 *   spill-worst      origin full, every sibling partly full: a full scan
 *   spill-typical    origin full, one random sibling empty: the scan stops
 *
 * Prints a table and, with -o FILE, JSON. Times are host nanoseconds per
 * decision; they are for comparing N with N, not a kernel measurement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spw_policy.h"

#define MAX_N 1024

static unsigned heads[MAX_N];
static struct spw_ring_acct rings[MAX_N];
static volatile int sink;
static const struct spw_clock never = { .now = 0, .stall = SPW_STALL_NEVER };

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void setup(unsigned n, unsigned origin_pending, unsigned sibling_pending)
{
	for (unsigned i = 0; i < n; i++) {
		heads[i] = 0;
		rings[i] = (struct spw_ring_acct){
			.entries = 64, .live = 1, .khead = &heads[i],
			.pending = i ? sibling_pending + (i % 7) : origin_pending,
		};
	}
}

static double measure(unsigned n, int empty_sibling)
{
	unsigned iters = 2000000 / n + 1000;
	double t0, best = 1e30;

	for (int rep = 0; rep < 5; rep++) {
		t0 = now_ns();
		for (unsigned k = 0; k < iters; k++) {
			unsigned e = empty_sibling ? 1 + (k * 2654435761u) % (n - 1) : 0;

			if (empty_sibling)
				rings[e].pending = 0;
			sink = spw_pick_ring(rings, n, 0, k, &never);
			if (empty_sibling)
				rings[e].pending = 1;
		}
		double per = (now_ns() - t0) / iters;
		if (per < best)
			best = per;
	}
	return best;
}

int main(int argc, char **argv)
{
	FILE *json = NULL;

	if (argc == 3 && !strcmp(argv[1], "-o"))
		json = fopen(argv[2], "w");
	printf("%6s %18s %14s %16s\n", "N", "origin-has-room", "spill-worst", "spill-typical");
	if (json)
		fprintf(json, "{\"unit\": \"ns per decision\", \"rows\": [");
	for (unsigned n = 2; n <= MAX_N; n *= 2) {
		double room, worst, typical;

		setup(n, 0, 1);
		room = measure(n, 0);
		setup(n, 64, 1);
		worst = measure(n, 0);
		typical = measure(n, 1);
		printf("%6u %15.1f ns %11.1f ns %13.1f ns\n", n, room, worst, typical);
		if (json)
			fprintf(json, "%s{\"n\": %u, \"origin_has_room\": %.2f, \"spill_worst\": %.2f, \"spill_typical\": %.2f}",
				n == 2 ? "" : ", ", n, room, worst, typical);
	}
	if (json) {
		fprintf(json, "]}\n");
		fclose(json);
	}
	return 0;
}
