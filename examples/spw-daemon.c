/* SPDX-License-Identifier: MIT */
/*
 * spw-daemon: an nginx-style master/worker server on spillway.
 *
 * The master opens one SO_REUSEPORT listener per worker, registers them
 * as one group and forks the workers; each worker maps its member's ring
 * and answers every connection with "hello from worker N". When a worker
 * dies the master starts a replacement on the same member: connections
 * that waited for the dead one were already moved to its siblings.
 *
 *   spw-daemon [-p PORT] [-w WORKERS] [-e RING_ENTRIES]
 *   SIGUSR1 to the master prints the group counters; SIGTERM stops.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spillway.h"

#define MAX_WORKERS 64

static volatile sig_atomic_t stop, dump;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		dump = 1;
	else
		stop = 1;
}

static int make_listener(unsigned short port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_ANY) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    bind(fd, (void *)&sin, sizeof(sin)) || listen(fd, 511)) {
		perror("listener");
		exit(1);
	}
	return fd;
}

static void worker(int group_fd, unsigned member)
{
	struct spw_ring ring;
	char msg[64];
	int len, ret, rfd;

	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGUSR1, SIG_DFL);
	rfd = spw_ring_open(group_fd, member);
	if (rfd < 0 || (ret = spw_ring_init(&ring, rfd)) < 0) {
		fprintf(stderr, "worker %u: ring: %s\n", member, strerror(-rfd));
		_exit(1);
	}
	len = snprintf(msg, sizeof(msg), "hello from worker %u\n", member);
	for (;;) {
		struct spw_cqe *cqe;
		unsigned head, n = 0;

		ret = spw_wait_cqe(&ring, &cqe);
		if (ret < 0) {
			fprintf(stderr, "worker %u: wait: %s\n", member, strerror(-ret));
			_exit(1);
		}
		/* everything the enter handed over, without another syscall */
		spw_for_each_cqe(&ring, head, cqe) {
			/* a client gone already must not SIGPIPE the worker */
			send(cqe->fd, msg, len, MSG_NOSIGNAL);
			close(cqe->fd);
			n++;
		}
		spw_cq_advance(&ring, n);
	}
}

static pid_t spawn(int group_fd, unsigned member)
{
	pid_t pid = fork();

	if (!pid)
		worker(group_fd, member);
	return pid;
}

static void print_stats(int group_fd, unsigned nr)
{
	struct spw_member_stats ms[MAX_WORKERS];
	int n = spw_group_stats(group_fd, ms, nr);

	for (int i = 0; i < n; i++)
		printf("worker %d: delivered %llu spilled_in %llu spilled_out %llu dropped %llu outstanding %u\n",
		       i, (unsigned long long)ms[i].delivered,
		       (unsigned long long)ms[i].spilled_in,
		       (unsigned long long)ms[i].spilled_out,
		       (unsigned long long)ms[i].dropped, ms[i].outstanding);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	unsigned short port = 8080;
	unsigned workers = 4, entries = 0;
	int lfd[MAX_WORKERS], group_fd, opt;
	pid_t pids[MAX_WORKERS];

	while ((opt = getopt(argc, argv, "p:w:e:")) != -1) {
		if (opt == 'p')
			port = atoi(optarg);
		else if (opt == 'w')
			workers = atoi(optarg);
		else if (opt == 'e')
			entries = atoi(optarg);
		else {
			fprintf(stderr, "usage: %s [-p port] [-w workers] [-e ring_entries]\n", argv[0]);
			return 2;
		}
	}
	if (!workers || workers > MAX_WORKERS)
		return 2;
	for (unsigned i = 0; i < workers; i++)
		lfd[i] = make_listener(port);
	struct spw_group_params p = { .ring_entries = entries };
	group_fd = spw_group_create(lfd, workers, &p);
	if (group_fd < 0) {
		fprintf(stderr, "spw_group_create: %s (is the module loaded?)\n",
			strerror(-group_fd));
		return 1;
	}
	/* no SA_RESTART: a signal must interrupt the master's waitpid() */
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	for (unsigned i = 0; i < workers; i++)
		pids[i] = spawn(group_fd, i);
	printf("master %d: %u workers on port %u\n", getpid(), workers, port);
	fflush(stdout);

	while (!stop) {
		int status;
		pid_t dead = waitpid(-1, &status, 0);

		if (dump) {
			dump = 0;
			print_stats(group_fd, workers);
		}
		for (unsigned i = 0; dead > 0 && !stop && i < workers; i++)
			if (pids[i] == dead) {
				fprintf(stderr, "worker %u died, replacing\n", i);
				pids[i] = spawn(group_fd, i);
			}
	}
	for (unsigned i = 0; i < workers; i++)
		kill(pids[i], SIGTERM);
	while (wait(NULL) > 0)
		;
	print_stats(group_fd, workers);
	return 0;
}
