/* SPDX-License-Identifier: GPL-2.0 */
/*
 * spw_compat.h - what differs between the kernels the module builds for
 * (Debian 12's 6.1 and 6.12), in one place. Kbuild probes the kernel's
 * headers for each feature and defines SPW_HAVE_*.
 */
#ifndef SPW_COMPAT_H
#define SPW_COMPAT_H

#include <linux/net.h>

/*
 * The listener's own accept into @newsock, as kernel_accept() makes it
 * (kern: the new socket is made the way a kernel caller's is). Since 6.10
 * the flags come in a struct proto_accept_arg.
 */
static inline int spw_ops_accept(struct socket *sock, struct socket *newsock,
				 int flags)
{
#ifdef SPW_HAVE_PROTO_ACCEPT_ARG
	struct proto_accept_arg arg = { .flags = flags, .kern = true };

	return READ_ONCE(sock->ops)->accept(sock, newsock, &arg);
#else
	return sock->ops->accept(sock, newsock, flags, true);
#endif
}

#endif /* SPW_COMPAT_H */
