/* SPDX-License-Identifier: MIT */
/*
 * spw-bench-server: what the core (server.c) offers the accept modes, and
 * what a mode (mode-*.c) provides. Adding a mode is adding one file with a
 * `const struct bench_mode` and one line in server.c's mode table.
 *
 * The core owns the processes: it parses options, forks the workers,
 * replaces dead ones, serves each accepted connection (handle_conn()),
 * counts, and writes the stats JSON. A mode owns the accept path: the
 * listeners the master makes before forking, and the worker's loop.
 */
#ifndef SPW_BENCH_SERVER_H
#define SPW_BENCH_SERVER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#define MAX_WORKERS	256
#define MAX_LISTENERS	1024	/* --members: a spillway group with idle members */

/* One slot per worker index, in shared memory (MAP_SHARED, made before the
 * first fork), so a SIGKILLed worker's counts survive. Only the current
 * incarnation of a worker writes its slot. */
struct wslot {
	int pid;		/* current incarnation */
	int generation;		/* incarnations started (1 = original) */
	int ready;		/* == generation once that incarnation is set up */
	int setup_error;	/* errno of a failed setup, 0 if fine */
	uint64_t accepted;	/* connections accepted (all incarnations) */
	uint64_t syscalls;	/* syscalls on the accept path */
	uint64_t accept_eagain;	/* accept4() calls that found nothing */
	uint64_t accept_errors;	/* other accept failures / error CQEs */
	uint64_t spilled;	/* spillway CQEs flagged SPW_CQE_F_SPILLED */
	uint64_t write_errors;	/* response send() failures */
	uint64_t read_errors;	/* no request: EOF or error before it */
	uint64_t max_batch;	/* most connections returned by one syscall */
	uint64_t rearms;	/* uring: multishot accept re-arms */
	uint64_t ring_bytes;	/* mapped ring bytes on the accept path */
	uint64_t queue_bound;	/* connections that can wait for this worker */
	uint64_t accept_mem_bytes; /* ring_bytes + queue_bound * tcp sock size */
	int64_t rss_before_kb;	/* VmRSS before accept-path setup */
	int64_t rss_after_kb;	/* VmRSS right after setup */
	int64_t rss_end_kb;	/* VmRSS when the worker stopped cleanly */
} __attribute__((aligned(64)));	/* no false sharing between workers */

enum work_kind { W_NONE, W_CPU, W_SLEEP };

struct opts {
	const struct bench_mode *mode;
	int workers;
	int port;
	enum work_kind work;
	long work_us;
	int slow_worker;
	double slow_factor;
	/*
	 * The one capacity knob: the most connections that may wait for one
	 * worker, counting every queue between the kernel's accept and the
	 * worker taking the connection in hand (listen queue, completion
	 * ring, CQ). Each mode sizes its own queues so that its bound is
	 * exactly this, and reports the bound it built (queue_bound).
	 */
	unsigned capacity;
	/*
	 * spillway only: members of the group (>= workers). Members past the
	 * workers are idle: their rings are never opened, so what lands on
	 * them waits for stall detection to hand it to a worker - the cost of
	 * the spill decision and of stealing in a large group.
	 */
	int members;
	/* spillway only: SPW_POLICY_* (0: the module's default) and spill_at */
	unsigned policy;
	unsigned spill_at;
	const char *stats_file;
	const char *pid_file;
	bool respawn;
	long respawn_delay_ms;
	long max_runtime_s;
	bool quiet;
};

struct bench_mode {
	const char *name;
	/*
	 * Master, before the first fork: make the listeners (listen_fds[],
	 * nr_listen) and whatever else the workers inherit. Exits through
	 * die() on failure.
	 */
	void (*master_setup)(void);
	/*
	 * Worker @index, freshly forked (first or replacement incarnation):
	 * keep what it needs of what the master made (close the rest), set up
	 * its accept path, call worker_ready(), then accept and handle_conn()
	 * until stop_flag. On a setup failure set me->setup_error and die().
	 */
	void (*worker_run)(int index);
	/* Master, once every first-generation worker is ready (optional). */
	void (*master_ready)(void);
	/* Master at shutdown, workers still running: a JSON value for the
	 * stats' "mode_stats" (malloc'd), or NULL (optional). */
	char *(*stats_json)(void);
};

extern const struct bench_mode mode_reuseport, mode_migrate, mode_epoll, mode_uring;

struct io_uring;
/*
 * A worker's io_uring as mode-uring.c sets it up (SINGLE_ISSUER |
 * DEFER_TASKRUN where the kernel has them, the ring fd registered) with
 * @fd as fixed file 0; @cq_entries 0: the default CQ. Returns the bytes it
 * maps; dies on failure.
 */
size_t uring_worker_ring(struct io_uring *ring, unsigned entries, unsigned cq_entries,
			 int fd, int index);
#ifndef SPW_BENCH_NO_SPILLWAY
extern const struct bench_mode mode_spillway, mode_spw_uring;
#endif
#ifdef SPW_BENCH_HAVE_BPF
extern const struct bench_mode mode_bpf;
#endif

/* shared state (server.c) */
extern struct opts o;
extern struct wslot *slots;
extern int listen_fds[MAX_LISTENERS];
extern int nr_listen;
extern long tcp_sock_bytes;
/* worker side */
extern volatile sig_atomic_t stop_flag;
extern int my_index;
extern struct wslot *me;

void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A listener on 127.0.0.1:o.port with the given listen() backlog. */
int make_listener(bool reuseport, bool nonblock, int backlog);
/* Close every inherited listener but @keep (-1: close all). */
void close_listeners_except(int keep);

/* Worker: the accept path is set up; publish its size and become ready. */
void worker_ready(uint64_t ring_bytes, uint64_t queue_bound);
/* Worker: serve one accepted connection (request, response, work, close). */
void handle_conn(int fd);
void accepted_one(void);
void accept_failed(const char *what, int err);
void note_batch(uint64_t n);
void sleep_us(long usec);

#endif
