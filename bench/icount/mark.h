/* SPDX-License-Identifier: MIT */
/*
 * bench/icount/mark.h: a phase mark for the spw-icount QEMU plugin.
 *
 * SPW_ICOUNT_MARK(P) executes `nopl 0x5357PPPP(%rax,%rax,1)`, an 8-byte
 * NOP on every x86-64 (bytes 0f 1f 84 00 PP PP 57 53). Outside the
 * plugin it does nothing; under it, the plugin writes the guest's
 * instruction totals, kernel and user, tagged with phase P (a constant,
 * 0..0xfffe). A compiler barrier, so work is not moved across it.
 */
#ifndef SPW_ICOUNT_MARK_H
#define SPW_ICOUNT_MARK_H

#define SPW_ICOUNT_MARK(phase)						\
	__asm__ __volatile__(".byte 0x0f, 0x1f, 0x84, 0x00\n\t"		\
			     ".short %c0\n\t"				\
			     ".byte 0x57, 0x53"				\
			     : : "i" (phase) : "memory")

#endif
