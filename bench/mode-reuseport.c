// SPDX-License-Identifier: MIT
/*
 * reuseport: N SO_REUSEPORT listeners, one per worker, blocking accept4().
 * The kernel hashes each connection to one listener; nothing moves it
 * after that. The master keeps its copies of the listeners (as nginx
 * does), so a replacement worker inherits its predecessor's queue.
 *
 * migrate: the same listeners and loop, but the master closes its copies
 * once the workers run, so a worker's listener dies with the worker and
 * net.ipv4.tcp_migrate_req = 1 (the driver sets it in the guest) lets the
 * kernel move its queued connections to a sibling listener. A replacement
 * makes a fresh listener of its own.
 *
 * Capacity: listen(Q - 1) holds Q connections (the queue is full when
 * sk_ack_backlog > sk_max_ack_backlog).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <unistd.h>
#include <sys/socket.h>

#include "server.h"

static void reuseport_setup(void)
{
	for (int i = 0; i < o.workers; i++)
		listen_fds[i] = make_listener(true, false, (int)o.capacity - 1);
	nr_listen = o.workers;
}

static void accept_loop(int lfd)
{
	worker_ready(0, o.capacity);
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
		handle_conn(fd);
	}
}

static void reuseport_worker(int index)
{
	close_listeners_except(index);
	accept_loop(listen_fds[index]);
}

const struct bench_mode mode_reuseport = {
	.name = "reuseport",
	.master_setup = reuseport_setup,
	.worker_run = reuseport_worker,
};

static bool master_closed;

/* After the master closed its copies, a replacement has no listener to
 * inherit: it makes its own (the port is shared through SO_REUSEPORT). */
static void migrate_worker(int index)
{
	int lfd;

	if (master_closed) {
		close_listeners_except(-1);
		lfd = make_listener(true, false, (int)o.capacity - 1);
	} else {
		close_listeners_except(index);
		lfd = listen_fds[index];
	}
	accept_loop(lfd);
}

static void migrate_ready(void)
{
	close_listeners_except(-1);
	for (int i = 0; i < nr_listen; i++)
		listen_fds[i] = -1;
	master_closed = true;
}

const struct bench_mode mode_migrate = {
	.name = "migrate",
	.master_setup = reuseport_setup,
	.worker_run = migrate_worker,
	.master_ready = migrate_ready,
};
