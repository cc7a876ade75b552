// SPDX-License-Identifier: MIT
/*
 * bench/icount/mark.c: icount-mark 1|2|3 executes that phase's mark
 * (mark.h), for scripts: bench/cost marks its phases with it. A process
 * start costs the same in every phase, so differences cancel it.
 */
#include <stdio.h>
#include <string.h>

#include "mark.h"

int main(int argc, char **argv)
{
	if (argc != 2 || strlen(argv[1]) != 1)
		goto usage;
	switch (argv[1][0]) {
	case '1':
		SPW_ICOUNT_MARK(1);
		return 0;
	case '2':
		SPW_ICOUNT_MARK(2);
		return 0;
	case '3':
		SPW_ICOUNT_MARK(3);
		return 0;
	}
usage:
	fprintf(stderr, "usage: icount-mark 1|2|3\n");
	return 2;
}
