/* SPDX-License-Identifier: MIT */
#ifndef SPW_SYSCALL_H
#define SPW_SYSCALL_H

#include <errno.h>
#include <sys/ioctl.h>

#include "spillway.h"

/* ioctl() with the liburing convention: -errno instead of errno. */
static inline int __spw_ioctl(int fd, unsigned long cmd, void *arg)
{
	int ret = ioctl(fd, cmd, arg);

	return ret < 0 ? -errno : ret;
}

#endif
