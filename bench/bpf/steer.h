/* SPDX-License-Identifier: MIT */
/*
 * Shared between the sk_reuseport program (steer.bpf.c) and the bpf accept
 * mode (mode-bpf.c): the layout of one worker's entry in the load map.
 */
#ifndef SPW_BENCH_STEER_H
#define SPW_BENCH_STEER_H

#include <linux/types.h>

/* one entry per worker in each map; == MAX_WORKERS in server.h */
#define STEER_MAX_WORKERS	256

/*
 * A worker's load is arrived - accepted + busy: the connections steered
 * to it that it has not accepted yet (its listen queue, SYN_RECV included)
 * plus the one it is serving. The program bumps arrived; the worker bumps
 * accepted and sets busy through its mmap of the map, without a syscall.
 * The counters are never reset, so a replacement worker inherits the true
 * backlog of the listener it inherits; busy belongs to one incarnation.
 */
struct steer_load {
	__u64 arrived;		/* SYNs steered here (program) */
	__u64 accepted;		/* connections accepted (worker) */
	__u64 busy;		/* 1 while the worker serves a connection */
};

#endif
