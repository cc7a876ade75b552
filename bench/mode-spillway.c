// SPDX-License-Identifier: MIT
/*
 * spillway: N SO_REUSEPORT listeners registered as one spillway group;
 * each worker reaps its own accept completion ring. The kernel spills a
 * connection to the least-full sibling when the worker's ring is full (or
 * the worker stalled), and resets it only when every ring is full.
 *
 * Capacity: rings of Q entries. The module bounds a member's outstanding
 * connections (queued in TCP for it + posted in its ring) by its ring
 * size, whatever the listen() backlog; registration may raise the backlog
 * (up to net.core.somaxconn) so that TCP never refuses before the module
 * decides, which is why it is created with the same listen(Q - 1) as the
 * reuseport mode.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include <liburing.h>
#include <spillway.h>

#include "server.h"

static int group_fd = -1;

/* a group of --members listeners needs that many fds in the master */
static void raise_nofile(rlim_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
		return;
	if (rl.rlim_max < need)
		rl.rlim_max = need;	/* root may raise the hard limit */
	rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("RLIMIT_NOFILE %lu for %d members: %s", (unsigned long)need, o.members,
		    strerror(errno));
}

/* server.c's --policy names map to SPW_POLICY_* by position */
_Static_assert(SPW_POLICY_DEFAULT == 0 && SPW_POLICY_ORIGIN == 1 && SPW_POLICY_LEAST == 2 &&
	       SPW_POLICY_P2C == 3 && SPW_POLICY_CPU == 4, "policy numbering");

static void spillway_setup(void)
{
	struct spw_group_params gp;

	raise_nofile((rlim_t)o.members + 64);
	for (int i = 0; i < o.members; i++)
		listen_fds[i] = make_listener(true, false, (int)o.capacity - 1);
	nr_listen = o.members;
	memset(&gp, 0, sizeof(gp));
	gp.ring_entries = o.capacity;
	gp.policy = o.policy;
	gp.spill_at = o.spill_at;
	group_fd = spw_group_create(listen_fds, (unsigned)o.members, &gp);
	if (group_fd < 0)
		die("spw_group_create: %s", strerror(-group_fd));
}

/* Worker @index's ring fd; the listeners are the group's. */
static int open_member_ring(int index)
{
	int ring_fd;

	close_listeners_except(-1);	/* the group holds the listeners */
	ring_fd = spw_ring_open(group_fd, (unsigned)index);
	if (ring_fd < 0) {
		me->setup_error = -ring_fd;
		die("spw_ring_open(member %d): %s", index, strerror(-ring_fd));
	}
	return ring_fd;
}

static void spillway_worker(int index)
{
	struct spw_ring ring;
	int ring_fd = open_member_ring(index), ret;

	ret = spw_ring_init(&ring, ring_fd);
	if (ret < 0) {
		me->setup_error = -ret;
		die("spw_ring_init: %s", strerror(-ret));
	}
	spw_ring_set_accept_flags(&ring, SPW_ACCEPT_CLOEXEC);
	/* the worker needs only its ring */
	close(group_fd);
	group_fd = -1;

	/* the module bounds a member's pending + posted connections by its ring */
	worker_ready(ring.map_len, ring.ring_entries);

	while (!stop_flag) {
		struct spw_cqe *cqe;
		int fd;

		if (spw_peek_cqe(&ring, &cqe) != 0) {
			/* ring empty: one SPW_IOC_ENTER installs every pending
			 * connection and waits for at least one CQE */
			ret = spw_enter(&ring, 1, NULL);
			me->syscalls++;
			if (ret > 0)
				note_batch((uint64_t)ret);
			else if (ret < 0 && ret != -EINTR && ret != -ETIME && ret != -EAGAIN)
				accept_failed("spw_enter", -ret);
			continue;
		}
		/*
		 * Handle the connection while its CQE still occupies the ring,
		 * so ring occupancy (what the kernel spills on) is this
		 * worker's true backlog, including the connection in hand.
		 */
		fd = cqe->fd;
		if (cqe->flags & SPW_CQE_F_SPILLED)
			me->spilled++;
		if (fd >= 0) {
			accepted_one();
			handle_conn(fd);
		} else {
			accept_failed("spillway CQE", -fd);
		}
		spw_cqe_seen(&ring, cqe);
	}
	spw_ring_exit(&ring);
}

/*
 * spw-uring: the same group, each worker taking its connections with
 * SPW_URING_ACCEPT commands on its ring fd in its own io_uring, set up as
 * mode-uring.c's is (SINGLE_ISSUER | DEFER_TASKRUN where the kernel has
 * them, the ring fd registered, the spillway ring fd a fixed file). It
 * keeps SPW_URING_INFLIGHT commands armed; each completes with one
 * connection, and one io_uring_enter() re-arms what completed and waits.
 * The ring fd is never mmap()ed and no CQE of the spillway ring is used.
 * Capacity: the ring's Q entries plus the commands' completions.
 */
#define SPW_URING_INFLIGHT	4

static void spw_uring_arm(struct io_uring *u, unsigned slot)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(u);

	if (!sqe)
		die("io_uring_get_sqe: SQ full");
	spw_prep_accept(sqe, 0, NULL, SPW_ACCEPT_CLOEXEC);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, slot);
}

static void spw_uring_worker(int index)
{
	int ring_fd = open_member_ring(index), ret;
	struct io_uring u;
	size_t ringsz;

	/* the worker needs only its ring */
	close(group_fd);
	group_fd = -1;
	ringsz = uring_worker_ring(&u, 2 * SPW_URING_INFLIGHT, 0, ring_fd, index);
	for (unsigned i = 0; i < SPW_URING_INFLIGHT; i++)
		spw_uring_arm(&u, i);
	/* the ring's entries + what completed commands hold */
	worker_ready(ringsz, o.capacity + SPW_URING_INFLIGHT);

	while (!stop_flag) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		int fds[SPW_URING_INFLIGHT], nfds = 0, err = 0;

		if (!io_uring_cq_ready(&u)) {
			/* one io_uring_enter(): re-arms and waits */
			ret = io_uring_submit_and_wait(&u, 1);
			me->syscalls++;
			if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
				accept_failed("io_uring_submit_and_wait", -ret);
			continue;
		}
		io_uring_for_each_cqe(&u, head, cqe) {
			n++;
			if (cqe->res >= 0)
				fds[nfds++] = cqe->res;
			else if (cqe->res != -ECANCELED)
				err = -cqe->res;
			spw_uring_arm(&u, (unsigned)io_uring_cqe_get_data64(cqe));
			if (nfds == SPW_URING_INFLIGHT)
				break;
		}
		io_uring_cq_advance(&u, n);
		if (err)
			accept_failed("SPW_URING_ACCEPT", err);
		note_batch((uint64_t)nfds);
		for (int i = 0; i < nfds; i++) {
			accepted_one();
			handle_conn(fds[i]);
		}
	}
	io_uring_queue_exit(&u);
}

static void json_u64(FILE *f, const char *k, uint64_t v, bool comma)
{
	fprintf(f, "\"%s\": %" PRIu64 "%s", k, v, comma ? ", " : "");
}

static void json_member(FILE *f, const struct spw_member_stats *m)
{
	fprintf(f, "{");
	json_u64(f, "arrived", m->arrived, true);
	json_u64(f, "delivered", m->delivered, true);
	json_u64(f, "spilled_out", m->spilled_out, true);
	json_u64(f, "spilled_in", m->spilled_in, true);
	json_u64(f, "dropped", m->dropped, true);
	json_u64(f, "rehomed", m->rehomed, true);
	json_u64(f, "outstanding", m->outstanding, true);
	json_u64(f, "pending", m->pending, true);
	json_u64(f, "ring_entries", m->ring_entries, true);
	json_u64(f, "state", m->state, false);
	fprintf(f, "}");
}

/* Group counters as a JSON object (malloc'd), or NULL. */
static char *spillway_stats_json(void)
{
	struct spw_member_stats *m;
	struct spw_group_stats st;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	int n;

	if (group_fd < 0)
		return NULL;
	m = calloc((size_t)o.members, sizeof(*m));
	if (!m)
		return NULL;
	memset(&st, 0, sizeof(st));
	n = spw_group_stats_full(group_fd, &st, m, (unsigned)o.members);
	f = open_memstream(&buf, &len);
	if (!f) {
		free(m);
		return NULL;
	}
	if (n < 0) {
		fprintf(f, "{\"error\": \"spw_group_stats_full: %s\"}", strerror(-n));
	} else {
		fprintf(f, "{\"nr_members\": %d, \"stale\": %" PRIu64 ", \"dropping\": %" PRIu64
			", \"total\": ", n, (uint64_t)st.stale, (uint64_t)st.dropping);
		json_member(f, &st.total);
		fprintf(f, ", \"members\": [");
		/* the workers' members; idle ones are in the totals */
		for (int i = 0; i < o.workers && i < n; i++) {
			if (i)
				fprintf(f, ", ");
			json_member(f, &m[i]);
		}
		fprintf(f, "]}");
	}
	fclose(f);
	free(m);
	return buf;
}

const struct bench_mode mode_spillway = {
	.name = "spillway",
	.master_setup = spillway_setup,
	.worker_run = spillway_worker,
	.stats_json = spillway_stats_json,
};

const struct bench_mode mode_spw_uring = {
	.name = "spw-uring",
	.master_setup = spillway_setup,
	.worker_run = spw_uring_worker,
	.stats_json = spillway_stats_json,
};
