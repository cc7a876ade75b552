// SPDX-License-Identifier: MIT
/*
 * bpf: N SO_REUSEPORT listeners, one per worker, blocking accept4() as in
 * the reuseport mode, but an sk_reuseport program (bpf/steer.bpf.c) puts
 * each new connection on the listener of the least-loaded worker instead
 * of hashing it. This is the strongest baseline a stock kernel offers.
 *
 * A worker's load is arrived - accepted + busy (bpf/steer.h) in an
 * mmapable BPF array: the program counts the SYNs it steers to a worker,
 * the worker counts its accepts and marks the connection in hand through
 * its mapping of the array, without a syscall.
 *
 * The master keeps its copies of the listeners (as in reuseport), so a
 * replacement worker inherits its predecessor's listener and queue, and
 * the socket array keeps pointing at it. The counters are never reset:
 * arrived - accepted stays the true backlog of that inherited queue.
 *
 * The program is attached with BPF_SK_REUSEPORT_SELECT_OR_MIGRATE when
 * the kernel takes it (5.14+), so that the queue of a listener that closes
 * goes to the least-loaded sibling, else as a plain sk_reuseport select.
 * With the master's copies a listener closes only at shutdown.
 *
 * Capacity: listen(Q - 1) holds Q connections, as in reuseport; the
 * steering only decides which worker's Q a connection joins.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "server.h"
#include "bpf/steer.h"
#include "steer.skel.h"

_Static_assert(STEER_MAX_WORKERS == MAX_WORKERS, "steer.h and server.h disagree");

static struct steer_bpf *skel;
static const char *attach_type;		/* what the loaded program attaches as */
static size_t load_map_bytes;		/* the mmapped load array, page-rounded */
static bool libbpf_silent;

/* libbpf's warnings (the verifier log among them) go through logmsg(),
 * except while probing for the migrate attach type, whose failure on an
 * old kernel is expected and handled. */
static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (libbpf_silent || level == LIBBPF_DEBUG || o.quiet)
		return 0;
	fprintf(stderr, "spw-bench-server[%d]: libbpf: ", (int)getpid());
	return vfprintf(stderr, fmt, ap);
}

/* Open and load the skeleton with only one of its programs; 0 or -errno. */
static int load_skel(bool migrate)
{
	int err;

	skel = steer_bpf__open();
	if (!skel)
		return -errno;
	skel->rodata->nr_workers = (__u32)o.workers;
	bpf_program__set_autoload(migrate ? skel->progs.steer_select : skel->progs.steer_migrate,
				  false);
	err = steer_bpf__load(skel);
	if (err) {
		steer_bpf__destroy(skel);
		skel = NULL;
	}
	return err;
}

static void bpf_setup(void)
{
	struct bpf_program *prog;
	long page = sysconf(_SC_PAGESIZE);
	int socks_fd, cookies_fd, prog_fd, err;

	libbpf_set_print(libbpf_print);
	libbpf_silent = true;
	err = load_skel(true);
	libbpf_silent = false;
	if (!err) {
		prog = skel->progs.steer_migrate;
		attach_type = "sk_reuseport/migrate";
	} else {
		logmsg("bpf: sk_reuseport/migrate program not loaded (%s); "
		       "falling back to plain sk_reuseport", strerror(-err));
		err = load_skel(false);
		if (err)
			die("bpf: loading the sk_reuseport program: %s", strerror(-err));
		prog = skel->progs.steer_select;
		attach_type = "sk_reuseport";
	}

	/*
	 * The listeners come after the (slow) verification: a connection
	 * that arrives before the program is attached is hashed by the
	 * kernel and never counted as arrived, so keep that window short.
	 */
	for (int i = 0; i < o.workers; i++)
		listen_fds[i] = make_listener(true, false, (int)o.capacity - 1);
	nr_listen = o.workers;

	socks_fd = bpf_map__fd(skel->maps.socks);
	cookies_fd = bpf_map__fd(skel->maps.cookies);
	for (int i = 0; i < o.workers; i++) {
		__u64 fd = (__u64)listen_fds[i], cookie;
		socklen_t len = sizeof(cookie);
		__u32 key = (__u32)i;

		err = bpf_map_update_elem(socks_fd, &key, &fd, BPF_ANY);
		if (err)
			die("bpf: socket array[%d] = listener: %s", i, strerror(-err));
		if (getsockopt(listen_fds[i], SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0)
			die("bpf: SO_COOKIE: %s", strerror(errno));
		err = bpf_map_update_elem(cookies_fd, &cookie, &key, BPF_NOEXIST);
		if (err)
			die("bpf: cookie map[%d]: %s", i, strerror(-err));
	}

	/* the program belongs to the reuseport group, not to this listener */
	prog_fd = bpf_program__fd(prog);
	if (setsockopt(listen_fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd,
		       sizeof(prog_fd)) < 0)
		die("bpf: SO_ATTACH_REUSEPORT_EBPF (%s): %s", attach_type, strerror(errno));

	load_map_bytes = (size_t)bpf_map__max_entries(skel->maps.load) *
			 bpf_map__value_size(skel->maps.load);
	load_map_bytes = (load_map_bytes + (size_t)page - 1) & ~((size_t)page - 1);
}

static void bpf_worker(int index)
{
	struct steer_load *loads, *mine;
	int lfd;

	close_listeners_except(index);
	lfd = listen_fds[index];
	loads = mmap(NULL, load_map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
		     bpf_map__fd(skel->maps.load), 0);
	if (loads == MAP_FAILED) {
		me->setup_error = errno;
		die("bpf: mmap of the load map: %s", strerror(errno));
	}
	mine = &loads[index];
	/* a predecessor killed while serving left busy set; the counters
	 * stay, they describe the queue this incarnation inherits */
	__atomic_store_n(&mine->busy, 0, __ATOMIC_RELAXED);
	worker_ready(load_map_bytes, o.capacity);

	while (!stop_flag) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		me->syscalls++;
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				me->accept_eagain++;
				continue;
			}
			accept_failed("accept4", errno);
			continue;
		}
		accepted_one();
		note_batch(1);
		/* busy first: the connection leaves the queue, not the load */
		__atomic_store_n(&mine->busy, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&mine->accepted, 1, __ATOMIC_RELEASE);
		handle_conn(fd);
		__atomic_store_n(&mine->busy, 0, __ATOMIC_RELEASE);
	}
	munmap(loads, load_map_bytes);
}

/* Per-worker counters from the load map, and the listen queue the kernel
 * reports for each listener (tcpi_unacked of a listener is its accept
 * queue length), to compare arrived - accepted with. */
static char *bpf_stats_json(void)
{
	char *buf = NULL;
	size_t len = 0;
	int load_fd;
	FILE *f;

	if (!skel)
		return NULL;
	f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	load_fd = bpf_map__fd(skel->maps.load);
	fprintf(f, "{\"attach_type\": \"%s\", \"workers\": [", attach_type);
	for (int i = 0; i < o.workers; i++) {
		struct steer_load l;
		struct tcp_info ti;
		socklen_t tlen = sizeof(ti);
		__u32 key = (__u32)i;
		int err;

		if (i)
			fprintf(f, ", ");
		err = bpf_map_lookup_elem(load_fd, &key, &l);
		if (err) {
			fprintf(f, "{\"error\": \"bpf_map_lookup_elem: %s\"}", strerror(-err));
			continue;
		}
		fprintf(f, "{\"arrived\": %" PRIu64 ", \"accepted\": %" PRIu64
			", \"busy\": %" PRIu64 ", \"backlog\": %" PRId64,
			(uint64_t)l.arrived, (uint64_t)l.accepted, (uint64_t)l.busy,
			(int64_t)(l.arrived - l.accepted));
		memset(&ti, 0, sizeof(ti));
		if (listen_fds[i] >= 0 &&
		    getsockopt(listen_fds[i], IPPROTO_TCP, TCP_INFO, &ti, &tlen) == 0)
			fprintf(f, ", \"listen_queue\": %u}", ti.tcpi_unacked);
		else
			fprintf(f, ", \"listen_queue\": null}");
	}
	fprintf(f, "]}");
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

const struct bench_mode mode_bpf = {
	.name = "bpf",
	.master_setup = bpf_setup,
	.worker_run = bpf_worker,
	.stats_json = bpf_stats_json,
};
