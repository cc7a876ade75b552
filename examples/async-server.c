/* SPDX-License-Identifier: MIT */
/*
 * async-server: one io_uring event loop that takes its connections from
 * a spillway ring. The ring fd is pollable, so the loop arms a poll on
 * it; when it fires, one spw_enter() hands over the whole batch and the
 * loop answers each connection with an io_uring send.
 *
 *   async-server [-p PORT] [-n CONNECTIONS_THEN_EXIT]
 */
#include <arpa/inet.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "spillway.h"

#define TAG_RING	1ULL
#define MSG		"hello from async-server\n"

int main(int argc, char **argv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	unsigned long served = 0, limit = 0;
	struct io_uring uring;
	struct spw_ring ring;
	int lfd, gfd, ret, opt;

	sin.sin_port = htons(8081);
	while ((opt = getopt(argc, argv, "p:n:")) != -1) {
		if (opt == 'p')
			sin.sin_port = htons(atoi(optarg));
		else if (opt == 'n')
			limit = strtoul(optarg, NULL, 0);
	}
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (void *)&sin, sizeof(sin)) || listen(lfd, 128)) {
		perror("listen");
		return 1;
	}
	gfd = spw_group_create(&lfd, 1, NULL);
	if (gfd < 0 || (ret = spw_ring_init(&ring, spw_ring_open(gfd, 0))) < 0) {
		fprintf(stderr, "spillway: %s\n", strerror(gfd < 0 ? -gfd : -ret));
		return 1;
	}
	spw_ring_set_accept_flags(&ring, SPW_ACCEPT_CLOEXEC | SPW_ACCEPT_NONBLOCK);
	if (io_uring_queue_init(64, &uring, 0)) {
		perror("io_uring_queue_init");
		return 1;
	}
	printf("async-server: port %d\n", ntohs(sin.sin_port));
	fflush(stdout);

	struct io_uring_sqe *sqe = io_uring_get_sqe(&uring);
	io_uring_prep_poll_add(sqe, ring.ring_fd, POLLIN);
	io_uring_sqe_set_data64(sqe, TAG_RING);

	while (!limit || served < limit) {
		struct io_uring_cqe *ucqe;

		io_uring_submit_and_wait(&uring, 1);
		while (io_uring_peek_cqe(&uring, &ucqe) == 0) {
			unsigned long long tag = io_uring_cqe_get_data64(ucqe);

			if (tag == TAG_RING) {
				struct spw_cqe *cqe;
				unsigned head, n = 0;

				/* one enter for the batch, then no syscall per CQE */
				spw_enter(&ring, 0, NULL);
				spw_for_each_cqe(&ring, head, cqe) {
					sqe = io_uring_get_sqe(&uring);
					if (!sqe) {
						io_uring_submit(&uring);
						sqe = io_uring_get_sqe(&uring);
					}
					/* a client gone already must not SIGPIPE the server */
					io_uring_prep_send(sqe, cqe->fd, MSG, strlen(MSG), MSG_NOSIGNAL);
					/* the send's completion closes the connection */
					io_uring_sqe_set_data64(sqe, (unsigned long long)cqe->fd << 1);
					n++;
				}
				spw_cq_advance(&ring, n);
				sqe = io_uring_get_sqe(&uring);
				io_uring_prep_poll_add(sqe, ring.ring_fd, POLLIN);
				io_uring_sqe_set_data64(sqe, TAG_RING);
			} else {
				close((int)(tag >> 1));
				served++;
			}
			io_uring_cqe_seen(&uring, ucqe);
		}
	}
	io_uring_queue_exit(&uring);
	spw_ring_exit(&ring);
	close(gfd);
	close(lfd);
	printf("async-server: served %lu\n", served);
	return 0;
}
