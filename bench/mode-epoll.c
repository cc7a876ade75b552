// SPDX-License-Identifier: MIT
/*
 * epoll: one shared non-blocking listener made by the master; each worker
 * waits with EPOLLEXCLUSIVE and accepts until EAGAIN. The queue is shared:
 * listen(N * Q - 1) holds N * Q connections, Q per worker on average
 * (queue_bound reports that share; one worker may take them all).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "server.h"

static void epoll_setup(void)
{
	listen_fds[0] = make_listener(false, true, (int)o.capacity * o.workers - 1);
	nr_listen = 1;
}

static void epoll_worker(int index)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE };
	int lfd = listen_fds[0];
	int ep;

	(void)index;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1: %s", strerror(errno));
	ev.data.fd = lfd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		die("epoll_ctl(EPOLLEXCLUSIVE): %s", strerror(errno));
	worker_ready(0, o.capacity);

	while (!stop_flag) {
		struct epoll_event out;
		uint64_t batch = 0;
		int n = epoll_wait(ep, &out, 1, -1);

		me->syscalls++;
		if (n <= 0)
			continue;
		while (!stop_flag) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

			me->syscalls++;
			if (fd < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					me->accept_eagain++;
					break;
				}
				if (errno == EINTR)
					continue;
				accept_failed("accept4", errno);
				break;
			}
			accepted_one();
			batch++;
			handle_conn(fd);
		}
		note_batch(batch);
	}
	close(ep);
}

const struct bench_mode mode_epoll = {
	.name = "epoll",
	.master_setup = epoll_setup,
	.worker_run = epoll_worker,
};
