/* SPDX-License-Identifier: GPL-2.0 */
/*
 * spw_compat.h - what differs between the kernels the module builds for
 * (Debian 12's 6.1 and 6.12), in one place. Kbuild probes the kernel's
 * headers for each feature and defines SPW_HAVE_*.
 */
#ifndef SPW_COMPAT_H
#define SPW_COMPAT_H

#include <linux/net.h>
#ifdef SPW_HAVE_IO_URING_SQE_CMD
#include <linux/io_uring/cmd.h>
#else
#include <linux/io_uring.h>
#endif

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

/*
 * The command area of an IORING_OP_URING_CMD SQE. Since 6.6 the command
 * keeps the SQE and io_uring_sqe_cmd() finds the area in it; before, it
 * kept a pointer to the area. Either way it may be the SQ ring itself,
 * which user space can rewrite: read each field once.
 */
static inline const void *spw_uring_cmd_area(const struct io_uring_cmd *cmd)
{
#ifdef SPW_HAVE_IO_URING_SQE_CMD
	return io_uring_sqe_cmd(cmd->sqe);
#else
	return cmd->cmd;
#endif
}

#endif /* SPW_COMPAT_H */
