/* SPDX-License-Identifier: MIT */
/*
 * test_badinput: every malformed request gets a clear error and changes
 * nothing; garbage written into the shared ring never loses a connection
 * and never makes the kernel warn (the vm runner fails the run if it
 * does).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static int ctl_fd(void)
{
	int fd = open(SPW_DEVICE_PATH, O_RDWR);

	cr_assert_geq(fd, 0);
	return fd;
}

static int raw_create(const int *fds, unsigned nr, unsigned entries,
		      unsigned flags, unsigned resv3)
{
	struct spw_group_create a = {
		.fds = (unsigned long)fds, .nr_fds = nr,
		.ring_entries = entries, .flags = flags,
	};
	int ctl = ctl_fd(), ret;

	a.resv[1] = resv3;
	ret = ioctl(ctl, SPW_IOC_GROUP_CREATE, &a);
	ret = ret < 0 ? -errno : ret;
	close(ctl);
	return ret;
}

/* The listener still behaves as a plain one: nothing was registered. */
static void expect_untouched(int lfd)
{
	int cfd = t_connect(AF_INET, t_port(lfd));
	int afd = accept(lfd, NULL, NULL);

	cr_expect_geq(afd, 0, "plain accept() after a refused registration");
	close(afd);
	close(cfd);
	/* and it can still join a group */
	int gfd = t_group(&lfd, 1, 4);
	close(gfd);
}

Test(badinput, create_rejects_malformed_requests)
{
	int lfd = t_listener(AF_INET, 0, false, 8);

	cr_expect_eq(raw_create(&lfd, 1, 4, 1u << 7, 0), -EINVAL, "unknown flag");
	cr_expect_eq(raw_create(&lfd, 1, 4, 0, 1), -EINVAL, "reserved field");
	cr_expect_eq(raw_create(&lfd, 0, 4, 0, 0), -EINVAL, "no members");
	cr_expect_eq(raw_create(&lfd, 1, 0, 0, 0), -EINVAL, "ring size zero");
	cr_expect_eq(raw_create(&lfd, 1, 3, 0, 0), -EINVAL, "not a power of two");
	cr_expect_eq(raw_create(&lfd, 1, SPW_MAX_RING_ENTRIES * 2, 0, 0), -EINVAL,
		     "ring too large");
	cr_expect_eq(raw_create(&lfd, SPW_MAX_MEMBERS + 1, 4, 0, 0), -E2BIG);
	cr_expect_eq(raw_create(NULL, 1, 4, 0, 0), -EFAULT);
	expect_untouched(lfd);
	close(lfd);
}

Test(badinput, create_rejects_bad_members)
{
	int lfd = t_listener(AF_INET, 0, false, 8);
	int fds[2];

	fds[0] = lfd;
	fds[1] = 9999;
	cr_expect_eq(raw_create(fds, 2, 4, 0, 0), -EBADF, "bad fd");
	fds[1] = open("/dev/null", O_RDONLY);
	cr_expect_eq(raw_create(fds, 2, 4, 0, 0), -ENOTSOCK);
	close(fds[1]);
	fds[1] = socket(AF_INET, SOCK_DGRAM, 0);
	cr_expect_eq(raw_create(fds, 2, 4, 0, 0), -EOPNOTSUPP, "UDP");
	close(fds[1]);
	fds[1] = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_expect_eq(raw_create(fds, 2, 4, 0, 0), -EOPNOTSUPP, "AF_UNIX");
	close(fds[1]);
	fds[1] = socket(AF_INET, SOCK_STREAM, 0);
	cr_expect_eq(raw_create(fds, 2, 4, 0, 0), -EINVAL, "not listening");
	close(fds[1]);
	fds[1] = lfd;
	cr_expect_eq(raw_create(fds, 2, 4, 0, 0), -EINVAL, "duplicate member");
	fds[1] = dup(lfd);
	cr_expect_eq(raw_create(fds, 2, 4, 0, 0), -EINVAL, "same socket, other fd");
	close(fds[1]);
	expect_untouched(lfd);
	close(lfd);
}

Test(badinput, a_socket_joins_one_group_only)
{
	int lfd = t_listener(AF_INET, 0, false, 8);
	int other = t_listener(AF_INET, 0, false, 8);
	int gfd = t_group(&lfd, 1, 4);
	int fds[2] = { other, lfd };

	cr_expect_eq(raw_create(&lfd, 1, 4, 0, 0), -EBUSY);
	/* all or nothing: @other must not stay registered */
	cr_expect_eq(raw_create(fds, 2, 4, 0, 0), -EBUSY);
	expect_untouched(other);
	close(gfd);
	/* after the group is gone the socket is free again */
	gfd = t_group(&lfd, 1, 4);
	close(gfd);
	close(lfd);
	close(other);
}

Test(badinput, socket_from_another_netns)
{
	int sv[2], lfd;
	pid_t pid;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	if (!pid) {
		/* make a listener in a fresh netns and send it back */
		char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
		struct iovec iov = { .iov_base = "x", .iov_len = 1 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		int fd;

		if (unshare(CLONE_NEWNET))
			_exit(77);
		system("ip link set lo up 2>/dev/null");
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || listen(fd, 4))
			_exit(1);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
		_exit(sendmsg(sv[1], &mh, 0) == 1 ? 0 : 1);
	}
	char cbuf[CMSG_SPACE(sizeof(int))], b;
	struct iovec iov = { .iov_base = &b, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	int status;

	cr_assert_eq(recvmsg(sv[0], &mh, 0), 1);
	waitpid(pid, &status, 0);
	cr_assert_eq(WEXITSTATUS(status), 0);
	memcpy(&lfd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(int));
	cr_expect_eq(raw_create(&lfd, 1, 4, 0, 0), -EXDEV);
	close(lfd);
}

Test(badinput, ring_open_and_enter_reject_malformed_requests)
{
	int lfd = t_listener(AF_INET, 0, false, 8);
	int gfd = t_group(&lfd, 1, 4);
	struct spw_ring_open o = { .member = 1 };
	struct spw_enter e = { 0 };
	int rfd, fd2;

	cr_expect_eq(spw_ring_open(gfd, 1), -EINVAL, "member out of range");
	cr_expect_eq(spw_ring_open(gfd, ~0u), -EINVAL);
	o.member = 0;
	o.resv[1] = 7;
	cr_expect_eq(ioctl(gfd, SPW_IOC_RING_OPEN, &o), -1);
	cr_expect_eq(errno, EINVAL);
	o.resv[1] = 0;
	o.flags = 1u << 9;
	cr_expect_eq(ioctl(gfd, SPW_IOC_RING_OPEN, &o), -1);
	cr_expect_eq(errno, EINVAL);

	rfd = spw_ring_open(gfd, 0);
	cr_assert_geq(rfd, 0);
	e.flags = 1u << 5;
	cr_expect_eq(ioctl(rfd, SPW_IOC_ENTER, &e), -1);
	cr_expect_eq(errno, EINVAL);
	e.flags = SPW_ENTER_F_TIMEOUT;
	e.timeout_ns = -1;
	cr_expect_eq(ioctl(rfd, SPW_IOC_ENTER, &e), -1);
	cr_expect_eq(errno, EINVAL);
	e = (struct spw_enter){ .accept_flags = SPW_ACCEPT_ALL + 1 };
	cr_expect_eq(ioctl(rfd, SPW_IOC_ENTER, &e), -1);
	cr_expect_eq(errno, EINVAL);
	/* wrong object, unknown command */
	cr_expect_eq(ioctl(gfd, SPW_IOC_ENTER, &e), -1);
	cr_expect_eq(errno, ENOTTY);
	cr_expect_eq(ioctl(rfd, SPW_IOC_RING_OPEN, &o), -1);
	cr_expect_eq(errno, ENOTTY);
	cr_expect_eq(ioctl(rfd, _IO(SPW_IOC_MAGIC, 99)), -1);
	cr_expect_eq(errno, ENOTTY);
	/* ABI 4's RING_OPEN (112-byte CQEs): refused, not misread */
	o = (struct spw_ring_open){ .member = 0 };
	cr_expect_eq(ioctl(gfd, _IOWR(SPW_IOC_MAGIC, 2, struct spw_ring_open), &o), -1);
	cr_expect_eq(errno, ENOTTY);
	o = (struct spw_ring_open){ .member = 0 };
	fd2 = ioctl(gfd, SPW_IOC_RING_OPEN, &o);
	cr_assert_geq(fd2, 0);
	cr_expect_eq(o.cqe_size, sizeof(struct spw_cqe));
	cr_expect_eq(o.cqe_size, 64u);
	close(fd2);
	/* mmap beyond the ring or at an offset */
	cr_expect_eq(mmap(NULL, 1 << 20, PROT_READ, MAP_SHARED, rfd, 0), MAP_FAILED);
	cr_expect_eq(mmap(NULL, 4096, PROT_READ, MAP_SHARED, rfd, 4096), MAP_FAILED);
	close(rfd);
	close(gfd);
	close(lfd);
}

/*
 * The consumer scribbles over its ring. The kernel keeps posting at its
 * own tail, refuses to trust the head, and sends the connections that
 * waited for this ring to a sibling instead of losing them.
 */
Test(badinput, garbage_in_the_shared_ring_loses_nothing, .timeout = 60)
{
	int lfd[2], cfd[6], gfd;
	struct spw_ring ring[2];
	struct spw_member_stats ms[2];
	unsigned got;

	t_listeners(lfd, 2, false, 8);
	gfd = t_group(lfd, 2, 8);
	t_ring(&ring[0], gfd, 0);
	t_ring(&ring[1], gfd, 1);

	/* head beyond tail, huge values everywhere the consumer can write */
	memset(ring[0].map, 0x5a, ring[0].map_len);
	for (unsigned i = 0; i < 3; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	/* ring 0 reads as full, so these spill at arrival */
	got = t_reap(&ring[1], 3, 5000, NULL);
	cr_expect_eq(got, 3u);
	cr_expect_eq(spw_enter(&ring[0], 0, NULL), -EINVAL);

	/* a head that is merely stale-but-plausible is honoured again */
	ring[0].hdr->head = 0;
	cr_expect_geq(spw_enter(&ring[0], 0, NULL), 0);

	/* tokens queued while the head was sane, then the head goes bad */
	ring[0].hdr->head = 0;
	*(unsigned *)&ring[0].hdr->tail = 0;
	for (unsigned i = 3; i < 6; i++)
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
	for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(5000)) {
		spw_group_stats(gfd, ms, 2);
		if (ms[0].arrived == 6)
			break;
	}
	ring[0].hdr->head = 12345;
	cr_expect_eq(spw_enter(&ring[0], 0, NULL), -EINVAL);
	got = t_reap(&ring[1], 3, 5000, NULL);
	cr_expect_eq(got, 3u, "connections pending on the corrupt ring moved on");

	cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
	cr_expect_eq(ms[0].dropped + ms[1].dropped, 0);
	cr_expect_eq(ms[1].delivered, 6, "delivered %llu/%llu spilled_out %llu rehomed %llu",
		     (unsigned long long)ms[0].delivered, (unsigned long long)ms[1].delivered,
		     (unsigned long long)ms[0].spilled_out, (unsigned long long)ms[0].rehomed);
	for (unsigned i = 0; i < 6; i++)
		close(cfd[i]);
	for (unsigned i = 0; i < 2; i++) {
		spw_ring_exit(&ring[i]);
		close(lfd[i]);
	}
	close(gfd);
}

/* Member 1's stats, after waiting for @pending tokens on it. */
static struct spw_member_stats member1_after(int gfd, unsigned pending)
{
	struct spw_member_stats ms[2];

	for (long end = t_now_ms() + 5000; t_now_ms() < end; usleep(5000)) {
		cr_assert_eq(spw_group_stats(gfd, ms, 2), 2);
		if (ms[1].pending == pending)
			break;
	}
	return ms[1];
}

/*
 * A RING_OPEN that fails changes nothing. Two connections wait on member
 * 1's ring, which nobody has opened yet (they wait there for its worker).
 * An open that fails at the copy of its results (a read-only argument),
 * or for want of an fd (RLIMIT_NOFILE), used to have activated the ring
 * already: its undo then closed the ring and moved the two connections
 * on. Now the ring is still NEW, with both, and none was moved or reset.
 */
Test(badinput, a_failed_ring_open_changes_nothing, .timeout = 60)
{
	int lfd[2], cfd[2], gfd, rfd;
	struct spw_member_stats m1;
	struct spw_ring_open *ro;
	struct rlimit rl, low;

	t_listeners(lfd, 2, false, 16);
	gfd = t_group(lfd, 2, 8);
	for (unsigned i = 0; i < 2; i++)
		cfd[i] = t_connect_id(t_port(lfd[1]), i);
	m1 = member1_after(gfd, 2);
	cr_assert_eq(m1.state, (unsigned)SPW_MEMBER_NEW);

	/* readable, not writable: the copy back to user space fails */
	ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(ro, MAP_FAILED);
	ro->member = 1;
	cr_assert_eq(mprotect(ro, 4096, PROT_READ), 0);
	cr_expect_eq(ioctl(gfd, SPW_IOC_RING_OPEN, ro), -1);
	cr_expect_eq(errno, EFAULT);
	m1 = member1_after(gfd, 2);
	cr_expect_eq(m1.state, (unsigned)SPW_MEMBER_NEW, "state %u after a failed open", m1.state);
	cr_expect_eq(m1.pending, 2u);
	cr_expect_eq(m1.rehomed + m1.dropped, 0u, "%llu moved, %llu reset",
		     (unsigned long long)m1.rehomed, (unsigned long long)m1.dropped);

	/* no fd left for the ring */
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rfd = dup(0);
	cr_assert_geq(rfd, 0);
	close(rfd);
	low = rl;
	low.rlim_cur = rfd;	/* the lowest free fd: no new fd at all */
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	rfd = spw_ring_open(gfd, 1);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	cr_expect_eq(rfd, -EMFILE);
	m1 = member1_after(gfd, 2);
	cr_expect_eq(m1.state, (unsigned)SPW_MEMBER_NEW, "state %u after a failed open", m1.state);
	cr_expect_eq(m1.pending, 2u);
	cr_expect_eq(m1.rehomed + m1.dropped, 0u);

	/* and a real open finds both */
	{
		struct spw_ring r;

		t_ring(&r, gfd, 1);
		cr_expect_eq(t_reap(&r, 2, 3000, NULL), 2u);
		spw_ring_exit(&r);
	}
	munmap(ro, 4096);
	for (unsigned i = 0; i < 2; i++)
		close(cfd[i]);
	close(gfd);
	close(lfd[0]);
	close(lfd[1]);
}
