/* SPDX-License-Identifier: MIT */
/*
 * pt-server: a tiny pre-forking server that exercises every call
 * libspillway-preload.so interposes, the way nginx-like servers make
 * them, and checks accept()'s contract on each connection.
 *
 *   pt-server [-n CONNECTIONS] [-e ring|plain]
 *
 * The master makes three SO_REUSEPORT listeners on one 127.0.0.1 port
 * and forks three workers; each keeps every listener (as nginx does) and
 * serves its own:
 *   worker 0  epoll (level-triggered), non-blocking listener,
 *             accept4() until EAGAIN
 *   worker 1  poll(), blocking listener, accept()/accept4()
 *   worker 2  blocking accept4() and nothing else
 * Connection k is accepted with flag set k % 4 and address buffer
 * k % 3 (full, truncated to 6 bytes, none); the worker checks the new
 * fd's O_NONBLOCK and FD_CLOEXEC and the address against getpeername(),
 * and answers "w<i> <ring|plain> ok" or "w<i> ... FAIL <what>", "ring"
 * when the process holds a spillway ring fd. The master connects
 * CONNECTIONS times (default 60), and with -e checks every answer's
 * mode. Exit 0 when every connection was answered "ok".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS	3

static const int flag_sets[4] = {
	SOCK_NONBLOCK, SOCK_CLOEXEC, SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
};

static void die(const char *what)
{
	fprintf(stderr, "pt-server: %s: %s\n", what, strerror(errno));
	exit(2);
}

/* Whether this process holds a spillway ring fd (the preload opened one). */
static bool have_ring(void)
{
	char path[300], link[64];
	struct dirent *d;
	bool found = false;
	DIR *dir = opendir("/proc/self/fd");

	if (!dir)
		return false;
	while ((d = readdir(dir))) {
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", d->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = '\0';
			if (!strcmp(link, "anon_inode:[spillway-ring]"))
				found = true;
		}
	}
	closedir(dir);
	return found;
}

/* accept() number @k on @lfd as its variant says, then check and answer. */
static int serve_one(int w, int lfd, unsigned k, bool use_accept)
{
	struct sockaddr_storage ss, peer;
	socklen_t len = sizeof(ss), plen = sizeof(peer), want_len = sizeof(ss);
	int flags = use_accept ? 0 : flag_sets[k % 4];
	unsigned av = k % 3;
	char msg[128] = "ok";
	int fd, fl;

	memset(&ss, 0xa5, sizeof(ss));
	if (av == 1)
		len = want_len = 6;	/* truncated: 6 bytes copied, full length back */
	if (use_accept)
		fd = accept(lfd, av == 2 ? NULL : (struct sockaddr *)&ss, av == 2 ? NULL : &len);
	else
		fd = accept4(lfd, av == 2 ? NULL : (struct sockaddr *)&ss, av == 2 ? NULL : &len,
			     flags);
	if (fd < 0)
		return -errno;

	fl = fcntl(fd, F_GETFL);
	if (!(fl & O_NONBLOCK) != !(flags & SOCK_NONBLOCK))
		snprintf(msg, sizeof(msg), "FAIL O_NONBLOCK %d for flags %#x", !!(fl & O_NONBLOCK), flags);
	fl = fcntl(fd, F_GETFD);
	if (!(fl & FD_CLOEXEC) != !(flags & SOCK_CLOEXEC))
		snprintf(msg, sizeof(msg), "FAIL FD_CLOEXEC %d for flags %#x", !!(fl & FD_CLOEXEC), flags);
	if (getpeername(fd, (struct sockaddr *)&peer, &plen))
		snprintf(msg, sizeof(msg), "FAIL getpeername: %s", strerror(errno));
	else if (av != 2 && len != plen)
		snprintf(msg, sizeof(msg), "FAIL address length %u, want %u", len, plen);
	else if (av != 2 && memcmp(&ss, &peer, want_len < plen ? want_len : plen))
		snprintf(msg, sizeof(msg), "FAIL address bytes differ (buffer %u)", want_len);
	else if (av == 1 && ((unsigned char *)&ss)[6] != 0xa5)
		snprintf(msg, sizeof(msg), "FAIL wrote past a 6-byte buffer");

	dprintf(fd, "w%d %s %s\n", w, have_ring() ? "ring" : "plain", msg);
	close(fd);
	return 0;
}

static void worker(int w, int lfd)
{
	unsigned k = 0;
	int ret;

	if (w == 0) {
		struct epoll_event ev = { .events = EPOLLIN }, out;
		int ep = epoll_create1(EPOLL_CLOEXEC);

		ev.data.u64 = 0x5157;
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev))
			die("epoll");
		/* the kernel's answer to unknown flags, with or without the preload */
		if (accept4(lfd, NULL, NULL, 0x1) != -1 || errno != EINVAL)
			die("accept4(flags 0x1) did not fail with EINVAL");
		for (;;) {
			if (epoll_wait(ep, &out, 1, -1) != 1)
				continue;
			if (out.data.u64 != 0x5157)
				die("epoll data changed");
			/* until EAGAIN, as nginx with multi_accept or EPOLLET does */
			while ((ret = serve_one(w, lfd, k, false)) == 0)
				k++;
			if (ret != -EAGAIN) {
				errno = -ret;
				die("accept4 on a non-blocking listener");
			}
		}
	}
	if (w == 1) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };

		for (;;) {
			if (poll(&p, 1, -1) != 1 || p.fd != lfd)
				continue;
			ret = serve_one(w, lfd, k, k % 5 == 0);
			if (ret && ret != -EINTR) {
				errno = -ret;
				die("accept after poll");
			}
			k += !ret;
		}
	}
	for (;;) {
		ret = serve_one(w, lfd, k, false);
		if (ret && ret != -EINTR) {
			errno = -ret;
			die("blocking accept4");
		}
		k += !ret;
	}
}

static int ask(int port, char *line, size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 5 };
	size_t got = 0;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin))) {
		close(fd);
		return -1;
	}
	while (got < len - 1) {
		ssize_t n = read(fd, line + got, len - 1 - got);

		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(line, '\n', got))
			break;
	}
	line[got] = '\0';
	close(fd);
	return got ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	unsigned conns = 60, answered = 0, per[WORKERS] = { 0 };
	const char *expect = NULL;
	pid_t pids[WORKERS];
	int lfd[WORKERS], one = 1, opt, bad = 0, i;
	socklen_t slen = sizeof(sin);

	while ((opt = getopt(argc, argv, "n:e:")) != -1) {
		if (opt == 'n')
			conns = (unsigned)atoi(optarg);
		else if (opt == 'e')
			expect = optarg;
		else
			return 2;
	}
	for (i = 0; i < WORKERS; i++) {
		lfd[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (lfd[i] < 0 || setsockopt(lfd[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
		    bind(lfd[i], (struct sockaddr *)&sin, sizeof(sin)) || listen(lfd[i], 64))
			die("listener");
		if (i == 0 && getsockname(lfd[0], (struct sockaddr *)&sin, &slen))
			die("getsockname");
	}
	if (fcntl(lfd[0], F_SETFL, O_NONBLOCK))
		die("O_NONBLOCK");
	for (i = 0; i < WORKERS; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			die("fork");
		if (!pids[i])
			worker(i, lfd[i]);
	}
	for (unsigned k = 0; k < conns; k++) {
		char line[160], mode[16], res[120];
		int w;

		if (ask(ntohs(sin.sin_port), line, sizeof(line))) {
			fprintf(stderr, "pt-server: connection %u: no answer\n", k);
			bad++;
			continue;
		}
		if (sscanf(line, "w%d %15s %119[^\n]", &w, mode, res) != 3 || w < 0 || w >= WORKERS) {
			fprintf(stderr, "pt-server: connection %u: bad answer '%s'\n", k, line);
			bad++;
			continue;
		}
		if (strcmp(res, "ok") || (expect && strcmp(mode, expect))) {
			fprintf(stderr, "pt-server: connection %u: %s", k, line);
			bad++;
			continue;
		}
		per[w]++;
		answered++;
	}
	for (i = 0; i < WORKERS; i++)
		kill(pids[i], SIGTERM);
	for (i = 0; i < WORKERS; i++)
		waitpid(pids[i], NULL, 0);
	printf("pt-server: %u of %u answered ok%s%s (workers: %u %u %u)\n", answered, conns,
	       expect ? ", all " : "", expect ? expect : "", per[0], per[1], per[2]);
	return bad || answered != conns ? 1 : 0;
}
