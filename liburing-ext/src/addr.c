/* SPDX-License-Identifier: MIT */
/*
 * addr.c: CQE addresses to the sockaddr the rest of a server speaks.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "spillway.h"

int spw_addr_to_sockaddr(const struct spw_addr *a, struct sockaddr *sa,
			 unsigned *len)
{
	if (a->family == AF_INET) {
		struct sockaddr_in sin;

		if (*len < sizeof(sin))
			return -ENOSPC;
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons((unsigned short)a->port);
		memcpy(&sin.sin_addr, &a->addr[0], 4);
		memcpy(sa, &sin, sizeof(sin));
		*len = sizeof(sin);
		return 0;
	}
	if (a->family == AF_INET6) {
		struct sockaddr_in6 sin6;

		if (*len < sizeof(sin6))
			return -ENOSPC;
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((unsigned short)a->port);
		memcpy(&sin6.sin6_addr, a->addr, 16);
		sin6.sin6_scope_id = a->scope_id;
		memcpy(sa, &sin6, sizeof(sin6));
		*len = sizeof(sin6);
		return 0;
	}
	return -EAFNOSUPPORT;
}

/*
 * Copy out as accept() does: the whole address when it fits, else the
 * first *len bytes; *len becomes the address's full length.
 */
static int spw_addr_copyout(const struct spw_addr *a, struct sockaddr *sa,
			    socklen_t *len)
{
	struct sockaddr_storage ss;
	unsigned full = sizeof(ss);
	int ret;

	if (!len)
		return -EINVAL;
	ret = spw_addr_to_sockaddr(a, (struct sockaddr *)&ss, &full);
	if (ret)
		return ret;
	if (sa)
		memcpy(sa, &ss, *len < full ? *len : full);
	*len = full;
	return 0;
}

/*
 * The address the client asked for is the connection's local end: the
 * fd's own, as for any accepted socket (one getsockname(), only when a
 * server asks; a CQE does not carry it).
 */
int spw_cqe_requested_addr(const struct spw_ring *ring, const struct spw_cqe *cqe,
			   struct sockaddr *sa, socklen_t *len)
{
	(void)ring;
	if (!cqe || !len)
		return -EINVAL;
	return getsockname(cqe->fd, sa, len) ? -errno : 0;
}

/* The address the ring's member serves: the same for every CQE of the ring. */
int spw_cqe_served_addr(const struct spw_ring *ring, const struct spw_cqe *cqe,
			struct sockaddr *sa, socklen_t *len)
{
	if (!ring || !ring->hdr || !cqe)
		return -EINVAL;
	return spw_addr_copyout(&ring->hdr->served, sa, len);
}
