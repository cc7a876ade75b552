/* SPDX-License-Identifier: MIT */
/*
 * setup.c: groups and rings — create, open, map, unmap.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "spillway.h"
#include "syscall.h"

static int spw_params_check(const struct spw_group_params *p)
{
	unsigned i;

	for (i = 0; i < sizeof(p->resv) / sizeof(p->resv[0]); i++)
		if (p->resv[i])
			return -EINVAL;
	return 0;
}

/* The kernel's create arguments from the library's parameters. */
static int spw_params_fill(struct spw_group_create *args,
			   const struct spw_group_params *p)
{
	memset(args, 0, sizeof(*args));
	args->ring_entries = SPW_DEFAULT_RING_ENTRIES;
	if (!p)
		return 0;
	if (spw_params_check(p))
		return -EINVAL;
	if (p->ring_entries)
		args->ring_entries = p->ring_entries;
	args->flags = p->flags;
	args->stall_ms = p->stall_ms;
	args->policy = p->policy;
	args->spill_at = p->spill_at;
	return 0;
}

/* One ioctl on a short-lived control device fd. */
static int spw_ctl_ioctl(unsigned long cmd, void *arg)
{
	int ctl, ret;

	ctl = open(SPW_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return -errno;
	ret = __spw_ioctl(ctl, cmd, arg);
	close(ctl);
	return ret;
}

int spw_group_create(const int *listen_fds, unsigned nr,
		     const struct spw_group_params *p)
{
	struct spw_group_create args;
	int ret;

	ret = spw_params_fill(&args, p);
	if (ret)
		return ret;
	args.fds = (unsigned long)listen_fds;
	args.nr_fds = nr;
	return spw_ctl_ioctl(SPW_IOC_GROUP_CREATE, &args);
}

static void spw_close_all(int *fds, unsigned nr)
{
	unsigned i;

	for (i = 0; i < nr; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/*
 * One SO_REUSEPORT listener of the set, bound (not listening yet) to
 * @addr; the first one's port, when @addr asks for port 0, becomes the
 * port of all. Returns the fd or -errno.
 */
static int spw_listener_bind(struct sockaddr_storage *addr, socklen_t addrlen)
{
	int one = 1, fd, ret;

	fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)addr, addrlen))
		goto err;
	if (((struct sockaddr_in *)addr)->sin_port == 0) {
		struct sockaddr_storage got;
		socklen_t len = sizeof(got);

		if (getsockname(fd, (struct sockaddr *)&got, &len))
			goto err;
		/* sin_port and sin6_port are at the same offset */
		((struct sockaddr_in *)addr)->sin_port = ((struct sockaddr_in *)&got)->sin_port;
	}
	return fd;
err:
	ret = -errno;
	close(fd);
	return ret;
}

/*
 * The listeners are made by the caller's own syscalls, so every check a
 * server's own socket()/bind()/listen() gets applies (capabilities for a
 * low port, a security module's bind and listen rules, RLIMIT_NOFILE).
 * All are bound before any listens: a socket takes connections only once
 * it listens, so a failure up to there disturbs no client of a port
 * other processes share. listen() itself fails only for memory once the
 * first one succeeded (the kernel's reuseport group grows past 128
 * sockets); then the ones already listening close, and their few
 * connections are reset, or migrate with net.ipv4.tcp_migrate_req.
 */
int spw_group_listen(const struct sockaddr *addr, socklen_t addrlen,
		     unsigned nr, int backlog, const struct spw_group_params *p)
{
	struct spw_group_params params = { 0 };
	struct sockaddr_storage ss;
	unsigned i;
	int *fds, ret;

	if (p)
		params = *p;
	if (!addr)
		return -EFAULT;
	if (addrlen < sizeof(struct sockaddr_in) || addrlen > sizeof(ss))
		return -EINVAL;
	if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
		return -EAFNOSUPPORT;
	if (!nr)
		return -EINVAL;
	if (nr > SPW_MAX_MEMBERS)
		return -E2BIG;
	ret = spw_params_check(&params);
	if (ret)
		return ret;
	fds = malloc(nr * sizeof(*fds));
	if (!fds)
		return -ENOMEM;
	for (i = 0; i < nr; i++)
		fds[i] = -1;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, addr, addrlen);
	for (i = 0; i < nr; i++) {
		ret = spw_listener_bind(&ss, addrlen);
		if (ret < 0)
			goto out;
		fds[i] = ret;
	}
	for (i = 0; i < nr; i++) {
		if (listen(fds[i], backlog)) {
			ret = -errno;
			goto out;
		}
	}
	params.flags |= SPW_GROUP_F_SHARE_LISTENERS;
	ret = spw_group_create(fds, nr, &params);
out:
	/* the group holds its own references: ours go either way */
	spw_close_all(fds, nr);
	free(fds);
	return ret;
}

int spw_member_listener(int group_fd, unsigned member)
{
	struct spw_member_listener args;

	memset(&args, 0, sizeof(args));
	args.member = member;
	args.flags = SPW_RING_OPEN_F_CLOEXEC;
	return __spw_ioctl(group_fd, SPW_IOC_MEMBER_LISTENER, &args);
}

int spw_ring_open(int group_fd, unsigned member)
{
	struct spw_ring_open args;
	int fd;

	memset(&args, 0, sizeof(args));
	args.member = member;
	args.flags = SPW_RING_OPEN_F_CLOEXEC;
	fd = __spw_ioctl(group_fd, SPW_IOC_RING_OPEN, &args);
	/* a module whose CQEs are not ours (it would be another ioctl number) */
	if (fd >= 0 && args.cqe_size != sizeof(struct spw_cqe)) {
		close(fd);
		return -EPROTO;
	}
	return fd;
}

/*
 * A ring fd carries its geometry in the ring header: map the first page
 * to read it, then map the whole ring. Both values are checked, since the
 * header is shared memory.
 */
int spw_ring_init(struct spw_ring *ring, int ring_fd)
{
	struct spw_ring_hdr *hdr;
	long page = sysconf(_SC_PAGESIZE);
	unsigned entries;
	size_t len, cqes_off;
	void *map;

	memset(ring, 0, sizeof(*ring));
	ring->ring_fd = -1;
	hdr = mmap(NULL, page, PROT_READ, MAP_SHARED, ring_fd, 0);
	if (hdr == MAP_FAILED)
		return -errno;
	entries = __atomic_load_n(&hdr->ring_entries, __ATOMIC_RELAXED);
	cqes_off = __atomic_load_n(&hdr->cqes_offset, __ATOMIC_RELAXED);
	munmap(hdr, page);
	if (!entries || entries & (entries - 1) || entries > SPW_MAX_RING_ENTRIES ||
	    cqes_off < sizeof(struct spw_ring_hdr) || cqes_off % 64)
		return -EINVAL;

	len = cqes_off + (size_t)entries * sizeof(struct spw_cqe);
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		   ring_fd, 0);
	if (map == MAP_FAILED)
		return -errno;

	hdr = map;
	ring->ring_fd = ring_fd;
	ring->map = map;
	ring->map_len = len;
	ring->hdr = hdr;
	ring->khead = &hdr->head;
	ring->ktail = &hdr->tail;
	ring->kflags = &hdr->flags;
	ring->kowner = &hdr->owner;
	ring->owner = 0;	/* until our first enter */
	ring->cqes = (struct spw_cqe *)((char *)map + cqes_off);
	ring->ring_entries = entries;
	ring->ring_mask = hdr->ring_mask;
	ring->member = hdr->member;
	ring->nr_members = hdr->nr_members;
	ring->accept_flags = SPW_ACCEPT_CLOEXEC;
	return 0;
}

void spw_ring_exit(struct spw_ring *ring)
{
	if (ring->map)
		munmap(ring->map, ring->map_len);
	if (ring->ring_fd >= 0)
		close(ring->ring_fd);
	memset(ring, 0, sizeof(*ring));
	ring->ring_fd = -1;
}

void spw_ring_set_accept_flags(struct spw_ring *ring, unsigned flags)
{
	ring->accept_flags = flags & SPW_ACCEPT_ALL;
	if (flags & SOCK_NONBLOCK)
		ring->accept_flags |= SPW_ACCEPT_NONBLOCK;
	if (flags & SOCK_CLOEXEC)
		ring->accept_flags |= SPW_ACCEPT_CLOEXEC;
}
