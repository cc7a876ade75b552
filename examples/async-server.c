/* SPDX-License-Identifier: MIT */
/*
 * async-server: one io_uring event loop that takes its connections from
 * a spillway ring and does their I/O, all in one io_uring_enter() per
 * turn. It keeps a few SPW_URING_ACCEPT commands in flight on the ring fd
 * (spw_prep_accept()); each completes with a connected socket in the
 * loop's own CQ, and is armed again beside the send that answers it.
 *
 *   async-server [-p PORT] [-n CONNECTIONS_THEN_EXIT] [-a ACCEPTS_IN_FLIGHT]
 */
#include <arpa/inet.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "spillway.h"

#define MSG		"hello from async-server\n"
/* user_data: an accept command's slot, or a send's fd << 1 | 1 */
#define TAG_SEND	1ULL

/* An SQE, submitting what is queued when the SQ is full. */
static struct io_uring_sqe *get_sqe(struct io_uring *uring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(uring);

	if (!sqe) {
		io_uring_submit(uring);
		sqe = io_uring_get_sqe(uring);
	}
	if (!sqe) {
		fprintf(stderr, "async-server: no SQE\n");
		exit(1);
	}
	return sqe;
}

static void arm_accept(struct io_uring *uring, int ring_fd, struct spw_cqe *slot,
		       unsigned long long tag)
{
	struct io_uring_sqe *sqe = get_sqe(uring);

	spw_prep_accept(sqe, ring_fd, slot, SPW_ACCEPT_CLOEXEC | SPW_ACCEPT_NONBLOCK);
	io_uring_sqe_set_data64(sqe, tag);
}

int main(int argc, char **argv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	unsigned long served = 0, limit = 0, accepts = 4, i;
	struct io_uring uring;
	struct spw_cqe *slots;
	int lfd, gfd, rfd, opt;

	sin.sin_port = htons(8081);
	while ((opt = getopt(argc, argv, "p:n:a:")) != -1) {
		if (opt == 'p')
			sin.sin_port = htons(atoi(optarg));
		else if (opt == 'n')
			limit = strtoul(optarg, NULL, 0);
		else if (opt == 'a')
			accepts = strtoul(optarg, NULL, 0);
	}
	if (!accepts || accepts > 1024) {
		fprintf(stderr, "async-server: -a takes 1..1024\n");
		return 2;
	}
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (void *)&sin, sizeof(sin)) || listen(lfd, 128)) {
		perror("listen");
		return 1;
	}
	gfd = spw_group_create(&lfd, 1, NULL);
	rfd = gfd < 0 ? gfd : spw_ring_open(gfd, 0);
	if (rfd < 0) {
		fprintf(stderr, "spillway: %s\n", strerror(-rfd));
		return 1;
	}
	/* each accept in flight has the CQE the kernel fills for it */
	slots = calloc(accepts, sizeof(*slots));
	if (!slots || io_uring_queue_init(2 * accepts + 8, &uring, 0)) {
		perror("io_uring_queue_init");
		return 1;
	}
	printf("async-server: port %d, %lu accepts in flight\n", ntohs(sin.sin_port),
	       accepts);
	fflush(stdout);

	for (i = 0; i < accepts; i++)
		arm_accept(&uring, rfd, &slots[i], i << 1);
	while (!limit || served < limit) {
		struct io_uring_cqe *ucqe;
		unsigned head, seen = 0;
		int ret;

		/* the sends and accepts armed last turn go in with the wait */
		ret = io_uring_submit_and_wait(&uring, 1);
		if (ret < 0) {
			fprintf(stderr, "io_uring_submit_and_wait: %s\n", strerror(-ret));
			return 1;
		}
		io_uring_for_each_cqe(&uring, head, ucqe) {
			unsigned long long tag = io_uring_cqe_get_data64(ucqe);
			struct io_uring_sqe *sqe;
			int fd = ucqe->res;

			seen++;
			if (tag & TAG_SEND) {
				close((int)(tag >> 1));
				served++;
				continue;
			}
			if (fd < 0) {
				fprintf(stderr, "async-server: accept: %s\n", strerror(-fd));
				return 1;
			}
			/* slots[tag >> 1] holds the peer's address, if one wanted it */
			sqe = get_sqe(&uring);
			/* a client gone already must not SIGPIPE the server */
			io_uring_prep_send(sqe, fd, MSG, strlen(MSG), MSG_NOSIGNAL);
			/* the send's completion closes the connection */
			io_uring_sqe_set_data64(sqe, (unsigned long long)fd << 1 | TAG_SEND);
			arm_accept(&uring, rfd, &slots[tag >> 1], tag);
		}
		io_uring_cq_advance(&uring, seen);
	}
	/* the accepts still in flight complete with -ECANCELED here */
	io_uring_queue_exit(&uring);
	free(slots);
	close(rfd);
	close(gfd);
	close(lfd);
	printf("async-server: served %lu\n", served);
	return 0;
}
