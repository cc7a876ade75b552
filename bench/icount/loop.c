// SPDX-License-Identifier: MIT
/*
 * bench/icount/loop.c: the plugin's own test, run in a guest.
 *
 * usage: icount-loop N
 * Marks phase 1, runs a loop of exactly 3 instructions per iteration N
 * times, marks phase 2, runs it 2N times, marks phase 3. Under
 * spw-icount the user instructions between marks 1 and 2 are 3N plus a
 * few (the loop's set-up and the marks' own blocks), between 2 and 3 6N
 * plus a few; bench/icount/check-loop compares them.
 */
#include <stdio.h>
#include <stdlib.h>

#include "mark.h"

static void spin(unsigned long n)
{
	/* nop; dec; jnz: three instructions an iteration, one block */
	__asm__ __volatile__("1:\n\t"
			     "nop\n\t"
			     "dec %0\n\t"
			     "jnz 1b"
			     : "+r" (n) : : "cc");
}

int main(int argc, char **argv)
{
	unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 0) : 0;

	if (n == 0) {
		fprintf(stderr, "usage: icount-loop N (N > 0)\n");
		return 2;
	}
	SPW_ICOUNT_MARK(1);
	spin(n);
	SPW_ICOUNT_MARK(2);
	spin(2 * n);
	SPW_ICOUNT_MARK(3);
	printf("icount-loop: %lu and %lu iterations\n", n, 2 * n);
	return 0;
}
