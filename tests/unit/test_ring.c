/* SPDX-License-Identifier: MIT */
/*
 * test_ring: the library's inline fast path (peek, seen, advance,
 * for-each, ready) over a ring in plain memory, with the test playing
 * the kernel's part: write CQEs, then release the tail.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "spillway.h"

struct fake {
	struct spw_ring ring;
	struct spw_ring_hdr hdr;
	struct spw_cqe cqes[8];
};

static struct fake *fake_new(unsigned start)
{
	struct fake *f = calloc(1, sizeof(*f));

	cr_assert_not_null(f);
	f->hdr.head = f->hdr.tail = start;
	f->hdr.ring_entries = 8;
	f->hdr.ring_mask = 7;
	f->ring.hdr = &f->hdr;
	f->ring.khead = &f->hdr.head;
	f->ring.ktail = &f->hdr.tail;
	f->ring.kowner = &f->hdr.owner;
	/* we entered once: the kernel gave our table owner id 1 */
	f->hdr.owner = f->ring.owner = 1;
	f->ring.cqes = f->cqes;
	f->ring.ring_mask = 7;
	f->ring.ring_entries = 8;
	f->ring.ring_fd = -1;
	return f;
}

/* The kernel side: post one CQE carrying @fd. */
static void kpost(struct fake *f, int fd)
{
	unsigned tail = f->hdr.tail;

	f->cqes[tail & 7] = (struct spw_cqe){ .fd = fd };
	__atomic_store_n(&f->hdr.tail, tail + 1, __ATOMIC_RELEASE);
}

/*
 * CQEs installed in another process's file table are not ours: while the
 * ring's owner id is not the one our enter got, the fast path shows none,
 * and moves no head; once the kernel gives us the ring (our id), it shows
 * what it posts to us.
 */
Test(fastpath, cqes_of_another_owner_are_invisible)
{
	struct fake *f = fake_new(0);
	struct spw_cqe *cqe = (void *)1;
	unsigned head, n = 0;

	f->hdr.owner = 2;	/* a sibling process entered, and has CQEs */
	kpost(f, 40);
	kpost(f, 41);
	cr_expect_eq(spw_peek_cqe(&f->ring, &cqe), -EAGAIN);
	cr_expect_null(cqe);
	cr_expect_eq(spw_cq_ready(&f->ring), 0);
	spw_for_each_cqe(&f->ring, head, cqe)
		n++;
	cr_expect_eq(n, 0);
	cr_expect_eq(f->hdr.head, 0u, "a non-owner moved the head");
	/* it leaves; the kernel discards its CQEs and our enter claims */
	f->hdr.head = f->hdr.tail;
	f->hdr.owner = 3;
	f->ring.owner = 3;
	kpost(f, 7);
	cr_expect_eq(spw_cq_ready(&f->ring), 1);
	cr_assert_eq(spw_peek_cqe(&f->ring, &cqe), 0);
	cr_expect_eq(cqe->fd, 7);
	free(f);
}

Test(fastpath, empty_ring_peeks_eagain)
{
	struct fake *f = fake_new(0);
	struct spw_cqe *cqe = (void *)1;

	cr_expect_eq(spw_peek_cqe(&f->ring, &cqe), -EAGAIN);
	cr_expect_null(cqe);
	cr_expect_eq(spw_cq_ready(&f->ring), 0);
	free(f);
}

Test(fastpath, fifo_order_across_u32_wrap)
{
	struct fake *f = fake_new(0xfffffffdu);
	struct spw_cqe *cqe;

	for (int i = 0; i < 6; i++)
		kpost(f, 100 + i);
	cr_expect_eq(spw_cq_ready(&f->ring), 6);
	for (int i = 0; i < 6; i++) {
		cr_assert_eq(spw_peek_cqe(&f->ring, &cqe), 0);
		cr_expect_eq(cqe->fd, 100 + i);
		spw_cqe_seen(&f->ring, cqe);
	}
	cr_expect_eq(f->hdr.head, 3u);	/* wrapped past zero */
	cr_expect_eq(spw_peek_cqe(&f->ring, &cqe), -EAGAIN);
	free(f);
}

Test(fastpath, for_each_then_advance_consumes_the_batch)
{
	struct fake *f = fake_new(6);
	struct spw_cqe *cqe;
	unsigned head, n = 0;

	for (int i = 0; i < 5; i++)
		kpost(f, i);
	spw_for_each_cqe(&f->ring, head, cqe) {
		cr_expect_eq(cqe->fd, (int)n);
		n++;
	}
	cr_expect_eq(n, 5);
	cr_expect_eq(f->hdr.head, 6u);	/* for-each does not consume */
	spw_cq_advance(&f->ring, n);
	cr_expect_eq(f->hdr.head, 11u);
	cr_expect_eq(spw_cq_ready(&f->ring), 0);
	free(f);
}

Test(fastpath, seen_null_is_a_no_op)
{
	struct fake *f = fake_new(0);

	spw_cqe_seen(&f->ring, NULL);
	spw_cq_advance(&f->ring, 0);
	cr_expect_eq(f->hdr.head, 0u);
	free(f);
}

Test(addr, converts_ipv4_and_ipv6)
{
	struct spw_addr a = { .family = 2 /* AF_INET */, .port = 8080,
			      .addr = { 0x0100007f } };
	unsigned char buf[128];
	unsigned len = sizeof(buf);

	cr_assert_eq(spw_addr_to_sockaddr(&a, (void *)buf, &len), 0);
	cr_expect_eq(len, 16u);
	a.family = 10;	/* AF_INET6 */
	len = sizeof(buf);
	cr_assert_eq(spw_addr_to_sockaddr(&a, (void *)buf, &len), 0);
	cr_expect_eq(len, 28u);
	len = 4;
	cr_expect_eq(spw_addr_to_sockaddr(&a, (void *)buf, &len), -ENOSPC);
	a.family = 1;
	len = sizeof(buf);
	cr_expect_eq(spw_addr_to_sockaddr(&a, (void *)buf, &len), -EAFNOSUPPORT);
}

Test(params, nonzero_reserved_fields_are_rejected)
{
	struct spw_group_params p = { .resv = { [2] = 1 } };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = 0;

	/* rejected before anything is opened: no module needed */
	cr_expect_eq(spw_group_create(&fd, 1, &p), -EINVAL);
	cr_expect_eq(spw_group_listen((struct sockaddr *)&sin, sizeof(sin), 1, 8, &p),
		     -EINVAL);
}

/*
 * The CQE address accessors copy out as accept() does: the served address
 * from the ring header, the requested one from the fd (a CQE does not
 * carry it).
 */
Test(addr, cqe_addresses_copy_out_like_accept)
{
	struct spw_ring_hdr hdr = { 0 };
	struct spw_ring ring = { .hdr = &hdr };
	struct spw_cqe cqe = { 0 };
	struct sockaddr_in6 sin6;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len;
	int lfd, cfd;

	/* a connection of our own: its local end is what the client asked for */
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(lfd, 0);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(lfd, 1), 0);
	len = sizeof(sin);
	cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_eq(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cqe.fd = accept(lfd, NULL, NULL);
	cr_assert_geq(cqe.fd, 0);
	hdr.served.family = AF_INET6;
	hdr.served.port = 8080;
	hdr.served.addr[3] = htonl(1);		/* ::1 */

	memset(&sin, 0, sizeof(sin));
	len = sizeof(sin);
	cr_assert_eq(spw_cqe_requested_addr(&ring, &cqe, (struct sockaddr *)&sin, &len), 0);
	cr_expect_eq(len, sizeof(sin));
	cr_expect_eq(sin.sin_family, AF_INET);
	cr_expect_eq(ntohl(sin.sin_addr.s_addr), INADDR_LOOPBACK);

	len = sizeof(sin6);
	cr_assert_eq(spw_cqe_served_addr(&ring, &cqe, (struct sockaddr *)&sin6, &len), 0);
	cr_expect_eq(len, sizeof(sin6));
	cr_expect_eq(sin6.sin6_family, AF_INET6);
	cr_expect_eq(ntohs(sin6.sin6_port), 8080);
	cr_expect(IN6_IS_ADDR_LOOPBACK(&sin6.sin6_addr));

	/* a short buffer gets the start of the address and the full length */
	memset(&sin6, 0xee, sizeof(sin6));
	len = 4;
	cr_assert_eq(spw_cqe_served_addr(&ring, &cqe, (struct sockaddr *)&sin6, &len), 0);
	cr_expect_eq(len, sizeof(sin6));
	cr_expect_eq(sin6.sin6_family, AF_INET6);
	cr_expect_eq(((unsigned char *)&sin6)[4], 0xee, "wrote past the buffer");

	/* no ring, or a header with no address: an error, not garbage */
	len = sizeof(sin6);
	cr_expect_eq(spw_cqe_served_addr(NULL, &cqe, (struct sockaddr *)&sin6, &len), -EINVAL);
	hdr.served.family = 0;
	cr_expect_eq(spw_cqe_served_addr(&ring, &cqe, (struct sockaddr *)&sin6, &len),
		     -EAFNOSUPPORT);
	close(cqe.fd);
	cqe.fd = cfd + 1000;	/* not an fd */
	len = sizeof(sin);
	cr_expect_eq(spw_cqe_requested_addr(&ring, &cqe, (struct sockaddr *)&sin, &len),
		     -EBADF);
	close(cfd);
	close(lfd);
}

/* A CQE is one cache line; the header keeps its cache-line layout. */
Test(abi, a_cqe_is_one_cache_line)
{
	cr_expect_eq(sizeof(struct spw_cqe), 64);
	cr_expect_eq(sizeof(struct spw_ring_hdr) % 64, 0);
	cr_expect_eq(sizeof(((struct spw_ring_hdr *)0)->served), sizeof(struct spw_addr));
}
