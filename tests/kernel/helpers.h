/* SPDX-License-Identifier: MIT */
/*
 * helpers.h: sockets, clients and rings for the in-kernel tests. Every
 * test runs inside a guest with the spillway module loaded and uses real
 * TCP connections on loopback, on ephemeral ports.
 */
#ifndef SPW_TEST_HELPERS_H
#define SPW_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "spillway.h"

/* A listening TCP socket on loopback; port 0 picks one. */
int t_listener(int family, uint16_t port, bool reuseport, int backlog);
uint16_t t_port(int fd);
/* @n listeners; same port with SO_REUSEPORT if @same_port, else one each. */
void t_listeners(int *fds, unsigned n, bool same_port, int backlog);
/* Blocking connect to loopback @port; returns the client fd. */
int t_connect(int family, uint16_t port);
/* Like t_connect(), but -1 when the server reset it during connect(). */
int t_try_connect(uint16_t port);
/* Connect and send a 4-byte id the server side can read back. */
int t_connect_id(uint16_t port, uint32_t id);
/* Read the 4-byte id a t_connect_id() client sent on server fd @fd. */
uint32_t t_read_id(int fd);
/* Wait up to @ms for the peer to reset @fd: true on ECONNRESET. */
bool t_was_reset(int fd, int ms);
/* A group with stall detection off: placement exactly as the claims say. */
int t_group(const int *fds, unsigned n, unsigned entries);
/*
 * The tests of the claims' placement use SPW_POLICY_ORIGIN ("origin
 * unless full or stalled"); test_policy covers the others.
 */
int t_group_policy(const int *fds, unsigned n, unsigned entries,
		   unsigned stall_ms, unsigned policy, unsigned spill_at);
/* A group with stall detection after @stall_ms (0: the default). */
int t_group_stall(const int *fds, unsigned n, unsigned entries, unsigned stall_ms);
/* Open member @m's ring and map it. */
void t_ring(struct spw_ring *r, int gfd, unsigned m);
/*
 * Reap CQEs from @r until @n have arrived or @ms passed; copies them to
 * @out (may be NULL, then the fds are closed) and returns how many.
 */
unsigned t_reap(struct spw_ring *r, unsigned n, int ms, struct spw_cqe *out);
/* Close the fds of every CQE ready in @r now and consume them; how many. */
unsigned t_drain(struct spw_ring *r);
/* TCP sockets in use in this netns, from /proc/net/sockstat{,6}. */
int t_tcp_inuse(void);
/*
 * Move the calling test process into a new network namespace with
 * loopback up. A test that compares t_tcp_inuse() before and after calls
 * it first: the count is per netns, and tests run in parallel (--jobs).
 */
void t_private_netns(void);
long t_now_ms(void);
/* Running on one of our debug kernels (tests/vm/build-debug-kernel)? */
bool t_debug_kernel(void);
/*
 * Lock statistics (CONFIG_LOCK_STAT, the debug kernels): t_lock_stat_reset()
 * switches collection on and clears it (false: no /proc/lock_stat);
 * t_lock_acquisitions() sums the acquisitions of lock class @name (e.g.
 * "&g->lock", the group lock) since, t_lock_holdtime_max() the longest
 * hold in microseconds.
 */
bool t_lock_stat_reset(void);
long t_lock_acquisitions(const char *name);
double t_lock_holdtime_max(const char *name);
/* Write @val to the file at @path (sysfs, procfs, debugfs); false if absent. */
bool t_write_file(const char *path, const char *val);

#endif
