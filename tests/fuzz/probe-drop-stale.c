/* SPDX-License-Identifier: MIT */
/*
 * probe-drop-stale: reproduces a counter that is counted twice. Run as
 * root in a guest with the module loaded (not part of the test suite).
 *
 * One listener, one ring of one entry that is opened but never entered:
 * its single token fills it, so every further connection is dropped. A
 * thread plain-accept()s on the listener meanwhile. A drop counts in
 * @dropped when it is decided; when spw_drop_work() then finds the accept
 * queue empty (the thread took the connection) it also counts @stale. So
 * arrived - (delivered + dropped + stale + pending) goes negative, by the
 * number of such drops. Prints the counters and that difference.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "spillway.h"

static int lfd;
static volatile int stop;
static unsigned long accepted;

static void *acceptor(void *arg)
{
	(void)arg;
	while (!stop) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);

		if (fd >= 0) {
			accepted++;
			close(fd);
		}
	}
	return NULL;
}

int main(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct spw_group_params p = { .ring_entries = 1, .stall_ms = SPW_STALL_OFF };
	socklen_t len = sizeof(a);
	struct spw_group_stats st;
	const struct spw_member_stats *t = &st.total;
	long long diff;
	pthread_t th;
	int gfd, rfd;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (lfd < 0 || bind(lfd, (void *)&a, sizeof(a)) || listen(lfd, 128) ||
	    getsockname(lfd, (void *)&a, &len)) {
		perror("listener");
		return 1;
	}
	gfd = spw_group_create(&lfd, 1, &p);
	rfd = gfd < 0 ? gfd : spw_ring_open(gfd, 0);
	if (rfd < 0) {
		fprintf(stderr, "group/ring: %d\n", rfd);
		return 1;
	}
	pthread_create(&th, NULL, acceptor, NULL);
	for (int i = 0; i < 2000; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0);

		/* most are reset during connect(): the drops */
		if (connect(c, (void *)&a, sizeof(a)) < 0 && errno != ECONNRESET)
			perror("connect");
		close(c);
	}
	usleep(200000);
	stop = 1;
	pthread_join(th, NULL);
	if (spw_group_stats_full(gfd, &st, NULL, 0) < 0)
		return 1;
	diff = (long long)t->arrived -
	       (long long)(t->delivered + t->dropped + st.stale + t->pending);
	printf("probe-drop-stale: accepted=%lu arrived=%llu delivered=%llu dropped=%llu stale=%llu pending=%u"
	       " arrived-(delivered+dropped+stale+pending)=%lld\n",
	       accepted, (unsigned long long)t->arrived, (unsigned long long)t->delivered,
	       (unsigned long long)t->dropped, (unsigned long long)st.stale, t->pending, diff);
	close(rfd);
	close(gfd);
	close(lfd);
	return diff != 0;
}
