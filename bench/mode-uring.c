// SPDX-License-Identifier: MIT
/*
 * uring: N SO_REUSEPORT listeners, one per worker; each worker accepts with
 * an io_uring multishot accept, set up as an expert would on these kernels:
 *  - IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (6.1+; without
 *    them if the kernel refuses): completions are produced only inside the
 *    worker's own io_uring_enter(), never by task work interrupting it;
 *  - the ring fd registered (io_uring_register_ring_fd), so an enter skips
 *    the fd table;
 *  - the listener a registered (fixed) file, accepted with IOSQE_FIXED_FILE.
 * The connection's own I/O stays on plain recv()/send()/close(), as in
 * every mode: each worker serves one connection at a time, so that the
 * accept path is the only thing that differs between modes (moving the I/O
 * onto the ring would turn the worker into a concurrent event loop and
 * measure a different server).
 *
 * Capacity Q = listen queue + CQ: listen(Q/2 - 2) holds Q/2 - 1
 * connections, the CQ Q/2 entries; when the CQ is full the multishot
 * accept posts one more (its final, overflowed completion) and stops
 * until re-armed, so at most Q connections wait for a worker.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <liburing.h>

#include "server.h"

static void uring_setup(void)
{
	for (int i = 0; i < o.workers; i++)
		listen_fds[i] = make_listener(true, false, (int)o.capacity / 2 - 2);
	nr_listen = o.workers;
}

static void arm_multishot(struct io_uring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	if (!sqe)
		die("io_uring_get_sqe: SQ full");
	/* fixed file 0: the worker's listener */
	io_uring_prep_multishot_accept(sqe, 0, NULL, NULL, SOCK_CLOEXEC);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, 1);
}

static int ring_init(struct io_uring *ring, unsigned entries, unsigned cq_entries,
		     unsigned flags)
{
	struct io_uring_params p;

	memset(&p, 0, sizeof(p));
	p.flags = flags;
	if (cq_entries) {
		p.flags |= IORING_SETUP_CQSIZE;
		p.cq_entries = cq_entries;
	}
	return io_uring_queue_init_params(entries, ring, &p);
}

size_t uring_worker_ring(struct io_uring *ring, unsigned entries, unsigned cq_entries,
			 int fd, int index)
{
	size_t ringsz;
	int ret;

	ret = ring_init(ring, entries, cq_entries,
			IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
	if (ret == -EINVAL)
		ret = ring_init(ring, entries, cq_entries, 0);	/* a kernel before 6.1 */
	if (ret < 0) {
		me->setup_error = -ret;
		die("io_uring_queue_init_params: %s", strerror(-ret));
	}
	ret = io_uring_register_files(ring, &fd, 1);
	if (ret < 0) {
		me->setup_error = -ret;
		die("io_uring_register_files: %s", strerror(-ret));
	}
	/* an optimisation only: without it every enter looks the fd up */
	if (io_uring_register_ring_fd(ring) < 0)
		logmsg("worker %d: io_uring_register_ring_fd failed; continuing", index);
	if (ring->features & IORING_FEAT_SINGLE_MMAP)
		ringsz = ring->sq.ring_sz > ring->cq.ring_sz ? ring->sq.ring_sz : ring->cq.ring_sz;
	else
		ringsz = ring->sq.ring_sz + ring->cq.ring_sz;
	return ringsz + (size_t)ring->sq.ring_entries * sizeof(struct io_uring_sqe);
}

static void uring_worker(int index)
{
	struct io_uring ring;
	int ret;
	size_t ringsz;

	close_listeners_except(index);
	ringsz = uring_worker_ring(&ring, 4, o.capacity / 2, listen_fds[index], index);

	arm_multishot(&ring);
	/* listen queue (Q/2 - 1) + CQ + the one overflowed final CQE */
	worker_ready(ringsz, (uint64_t)o.capacity / 2 - 1 + ring.cq.ring_entries + 1);

	while (!stop_flag) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		int fds[64];
		int nfds = 0, cqe_err = 0;
		bool rearm = false;

		if (!io_uring_cq_ready(&ring)) {
			/* one io_uring_enter(): submits a pending re-arm and waits */
			ret = io_uring_submit_and_wait(&ring, 1);
			me->syscalls++;
			if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
				accept_failed("io_uring_submit_and_wait", -ret);
			continue;
		}
		io_uring_for_each_cqe(&ring, head, cqe) {
			n++;
			if (cqe->res >= 0)
				fds[nfds++] = cqe->res;
			else if (cqe->res != -ECANCELED)
				cqe_err = -cqe->res;
			if (!(cqe->flags & IORING_CQE_F_MORE))
				rearm = true;
			if (nfds == (int)(sizeof(fds) / sizeof(fds[0])))
				break;
		}
		io_uring_cq_advance(&ring, n);
		if (cqe_err)
			accept_failed("multishot accept CQE", cqe_err);
		if (rearm) {
			me->rearms++;
			arm_multishot(&ring);
		}
		note_batch((uint64_t)nfds);
		for (int i = 0; i < nfds; i++) {
			accepted_one();
			handle_conn(fds[i]);
		}
	}
	io_uring_queue_exit(&ring);
}

const struct bench_mode mode_uring = {
	.name = "uring",
	.master_setup = uring_setup,
	.worker_run = uring_worker,
};
