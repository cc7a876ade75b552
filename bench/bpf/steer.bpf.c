// SPDX-License-Identifier: MIT
/*
 * sk_reuseport program of the bpf accept mode (mode-bpf.c): steer each new
 * connection to the SO_REUSEPORT listener of the least-loaded worker, the
 * best a stock kernel offers without spillway.
 *
 * A worker's load (steer.h) is read from an mmapable array that the
 * workers update without syscalls. The connection's hash picks an origin
 * worker, as the kernel's own reuseport hash would; the scan starts there,
 * so ties go to the origin and then to its successors, which spreads an
 * idle group the way plain reuseport does.
 *
 * Two entry points, one loaded: steer_migrate (attach type
 * BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, 5.14+) also places the requests and
 * children of a closing listener on the least-loaded other worker;
 * steer_select is the fallback for kernels without it.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "steer.h"

#define TCP_FLAGS_OFF	13	/* byte of the TCP header holding SYN, ACK */
#define TCP_FLAG_SYN	0x02
#define TCP_FLAG_ACK	0x10
#define NO_WORKER	0xffffffffu

/* set by the loader before load; read-only to the program, so the verifier
 * knows it and the scan loop is verified for exactly this many workers */
const volatile __u32 nr_workers = 1;

/* worker index -> its listener */
struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, STEER_MAX_WORKERS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u64));
} socks SEC(".maps");

/* worker index -> its load; mmapped by the workers */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, STEER_MAX_WORKERS);
	__type(key, __u32);
	__type(value, struct steer_load);
} load SEC(".maps");

/* listener socket cookie -> worker index: which worker a migrating
 * request is leaving (ctx->sk is then the closing listener) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEER_MAX_WORKERS);
	__type(key, __u64);
	__type(value, __u32);
} cookies SEC(".maps");

static __always_inline __s64 load_of(const struct steer_load *l)
{
	/* written concurrently by the worker: read each field once */
	__u64 arrived = *(const volatile __u64 *)&l->arrived;
	__u64 accepted = *(const volatile __u64 *)&l->accepted;
	__u64 busy = *(const volatile __u64 *)&l->busy;
	__s64 queued = (__s64)(arrived - accepted);

	/* a SYN is counted when steered; a connection that was never
	 * counted (a SYN-cookie ACK) can make accepted run ahead */
	if (queued < 0)
		queued = 0;
	return queued + (__s64)busy;
}

/* The least-loaded worker but @skip, scanning from @origin (< n) so that
 * the origin wins ties; NO_WORKER if there is none. */
static __always_inline __u32 pick(__u32 origin, __u32 n, __u32 skip)
{
	__s64 best_load = 0x7fffffffffffffffLL;
	__u32 best = NO_WORKER;

	for (__u32 i = 0; i < STEER_MAX_WORKERS; i++) {
		struct steer_load *l;
		__u32 w;
		__s64 ld;

		if (i >= n)
			break;
		w = origin + i;
		if (w >= n)
			w -= n;
		if (w == skip)
			continue;
		l = bpf_map_lookup_elem(&load, &w);
		if (!l)
			continue;
		ld = load_of(l);
		if (ld < best_load) {
			best_load = ld;
			best = w;
		}
	}
	return best;
}

/* Count only what starts a connection: other packets that reach a
 * listener (a SYN-cookie ACK, a stray ACK or RST) are steered too, but
 * counting them would leave arrivals that are never accepted. */
static __always_inline int is_syn(const struct sk_reuseport_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const __u8 *end = (const __u8 *)(long)ctx->data_end;

	if (data + TCP_FLAGS_OFF + 1 > end)
		return 1;	/* cannot tell: count it */
	return (data[TCP_FLAGS_OFF] & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

static __always_inline void add_arrived(__u32 w, __u64 v)
{
	struct steer_load *l = bpf_map_lookup_elem(&load, &w);

	if (l)
		__sync_fetch_and_add(&l->arrived, v);
}

static __always_inline int steer(struct sk_reuseport_md *ctx, int migrating)
{
	__u32 n = nr_workers, from = NO_WORKER, idx;

	if (n == 0 || n > STEER_MAX_WORKERS)
		return SK_PASS;
	if (migrating) {
		__u64 cookie = bpf_get_socket_cookie(ctx->sk);
		__u32 *f = bpf_map_lookup_elem(&cookies, &cookie);

		if (f)
			from = *f;
	}
	idx = pick(ctx->hash % n, n, from);
	/* nothing to choose, or no listener at idx: the kernel's hash decides */
	if (idx == NO_WORKER)
		return SK_PASS;
	if (bpf_sk_select_reuseport(ctx, &socks, &idx, 0))
		return SK_PASS;
	if (migrating) {
		/* the connection moves: it will be accepted by idx, not from */
		add_arrived(idx, 1);
		if (from != NO_WORKER)
			add_arrived(from, (__u64)-1);
	} else if (is_syn(ctx)) {
		add_arrived(idx, 1);
	}
	return SK_PASS;
}

SEC("sk_reuseport/migrate")
int steer_migrate(struct sk_reuseport_md *ctx)
{
	return steer(ctx, ctx->migrating_sk != 0);
}

SEC("sk_reuseport")
int steer_select(struct sk_reuseport_md *ctx)
{
	return steer(ctx, 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
