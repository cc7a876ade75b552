// SPDX-License-Identifier: MIT
/*
 * spw-icount: a QEMU TCG plugin that counts the guest's instructions, kernel
 * and user apart, between marks the guest sets itself.
 *
 * Why a plugin: timings in a TCG guest spread by half; instructions retired
 * do not. Each translated block gets one execution callback carrying its
 * instruction count, added to its vCPU's counters (kernel when the block's
 * address has bit 63 set, x86-64's kernel half, else user). Per-vCPU
 * counters need no atomics under MTTCG, where vCPUs run on their own
 * threads; under -icount one thread runs them all.
 *
 * A mark is an 8-byte NOP the guest executes: `nopl 0x5357PPPP(%rax,%rax)`,
 * bytes 0f 1f 84 00 PP PP 57 53 ("SW" the signature, PPPP the phase). When
 * one executes, the plugin writes the totals over all vCPUs:
 *     M <phase> <vcpu> <kernel> <user>
 * and, with bins=on, the instructions counted since the previous mark by
 * the start address of their block (blocks end at calls and returns, so an
 * address resolves to one function):
 *     B <phase> <hex address> <instructions>
 * (an address may have several lines, one per block length: add them up).
 * A block is counted when it starts; one that faults half-way counts in
 * full, a few instructions in a phase of millions.
 *
 * Arguments: outfile=PATH (default stderr through QEMU's log), bins=on.
 * Build: see bench/icount/meson.build (needs only the API header, which
 * bench/icount/fetch-header takes from Debian's qemu source package).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_LEN 8

struct vcpu_count {
	uint64_t kernel;
	uint64_t user;
} __attribute__((aligned(64)));

/*
 * One per block address and length, shared by every translation of it
 * (QEMU retranslates after a flush) and, for user addresses, by every
 * process with a block of that length there: user code at one address
 * differs between processes, so the length is part of the key. Made on
 * first translation, never freed: their number is bounded by the guest's
 * code, not by how long it runs.
 */
struct bin {
	uint64_t vaddr;
	uint64_t insns;		/* atomic: blocks run on any vCPU thread */
	uint32_t n;
	bool kernel;
};

static struct vcpu_count *counts;
static int n_vcpus;
static FILE *out;
static bool bins_on;

/* An open-addressed table of bins, grown under the lock at translation. */
static pthread_mutex_t bins_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bin **bins;
static size_t bins_cap, bins_used;
/* Marks are rare: one lock serialises their output. */
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t bin_hash(uint64_t vaddr, uint32_t n, size_t cap)
{
	return (size_t)(((vaddr ^ n) * 0x9e3779b97f4a7c15ull) >> 17) & (cap - 1);
}

static void bins_grow(void)
{
	size_t cap = bins_cap ? bins_cap * 2 : 1 << 16;
	struct bin **nb = calloc(cap, sizeof(*nb));

	if (!nb) {
		fprintf(stderr, "spw-icount: out of memory\n");
		abort();
	}
	for (size_t i = 0; i < bins_cap; i++) {
		struct bin *b = bins[i];
		size_t j;

		if (!b)
			continue;
		for (j = bin_hash(b->vaddr, b->n, cap); nb[j]; j = (j + 1) & (cap - 1))
			;
		nb[j] = b;
	}
	free(bins);
	bins = nb;
	bins_cap = cap;
}

static struct bin *bin_get(uint64_t vaddr, uint32_t n)
{
	struct bin *b;
	size_t j;

	pthread_mutex_lock(&bins_lock);
	if ((bins_used + 1) * 2 > bins_cap)
		bins_grow();
	for (j = bin_hash(vaddr, n, bins_cap); bins[j]; j = (j + 1) & (bins_cap - 1)) {
		if (bins[j]->vaddr == vaddr && bins[j]->n == n)
			break;
	}
	b = bins[j];
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			abort();
		b->vaddr = vaddr;
		b->n = n;
		b->kernel = vaddr >> 63;
		bins[j] = b;
		bins_used++;
	}
	pthread_mutex_unlock(&bins_lock);
	return b;
}

static void tb_exec(unsigned int vcpu, void *udata)
{
	struct bin *b = udata;

	if (b->kernel)
		counts[vcpu].kernel += b->n;
	else
		counts[vcpu].user += b->n;
	if (bins_on)
		__atomic_fetch_add(&b->insns, b->n, __ATOMIC_RELAXED);
}

static void mark_exec(unsigned int vcpu, void *udata)
{
	unsigned int phase = (unsigned int)(uintptr_t)udata;
	uint64_t k = 0, u = 0;

	pthread_mutex_lock(&out_lock);
	for (int i = 0; i < n_vcpus; i++) {
		k += counts[i].kernel;
		u += counts[i].user;
	}
	fprintf(out, "M %u %u %" PRIu64 " %" PRIu64 "\n", phase, vcpu, k, u);
	if (bins_on) {
		pthread_mutex_lock(&bins_lock);
		for (size_t i = 0; i < bins_cap; i++) {
			struct bin *b = bins[i];
			uint64_t c;

			if (!b)
				continue;
			c = __atomic_exchange_n(&b->insns, 0, __ATOMIC_RELAXED);
			if (c)
				fprintf(out, "B %u %" PRIx64 " %" PRIu64 "\n",
					phase, b->vaddr, c);
		}
		pthread_mutex_unlock(&bins_lock);
	}
	fflush(out);
	pthread_mutex_unlock(&out_lock);
}

/* The phase of a mark, or -1 if the instruction is not one. */
static int mark_phase(struct qemu_plugin_insn *insn)
{
	const uint8_t *p = qemu_plugin_insn_data(insn);

	if (qemu_plugin_insn_size(insn) != MARK_LEN)
		return -1;
	if (p[0] != 0x0f || p[1] != 0x1f || p[2] != 0x84 || p[3] != 0x00 ||
	    p[6] != 0x57 || p[7] != 0x53)
		return -1;
	return p[4] | p[5] << 8;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);
	uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
	struct bin *b = bin_get(vaddr, (uint32_t)n);

	(void)id;
	qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, b);
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		int phase = mark_phase(insn);

		if (phase >= 0)
			qemu_plugin_register_vcpu_insn_exec_cb(insn, mark_exec,
				QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)phase);
	}
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
	(void)id;
	(void)p;
	mark_exec(0, (void *)(uintptr_t)0xffff);	/* the totals at exit */
	if (out != stderr)
		fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
					   const qemu_info_t *info,
					   int argc, char **argv)
{
	const char *outfile = NULL;

	for (int i = 0; i < argc; i++) {
		if (!strncmp(argv[i], "outfile=", 8)) {
			outfile = argv[i] + 8;
		} else if (!strcmp(argv[i], "bins=on")) {
			bins_on = true;
		} else if (!strcmp(argv[i], "bins=off")) {
			bins_on = false;
		} else {
			fprintf(stderr, "spw-icount: unknown argument '%s'\n", argv[i]);
			return -1;
		}
	}
	if (!info->system_emulation) {
		fprintf(stderr, "spw-icount: system emulation only\n");
		return -1;
	}
	n_vcpus = info->system.max_vcpus;
	counts = aligned_alloc(64, n_vcpus * sizeof(*counts));
	if (!counts)
		return -1;
	memset(counts, 0, n_vcpus * sizeof(*counts));
	out = stderr;
	if (outfile) {
		out = fopen(outfile, "w");
		if (!out) {
			fprintf(stderr, "spw-icount: %s: %s\n", outfile, strerror(errno));
			return -1;
		}
	}
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
