/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * test_unload: a connection taken from a member with plain accept() while
 * the group lived must carry nothing of the module. Close the group,
 * rmmod (as a DKMS upgrade does), then move data both ways: before the
 * wait-queue design the child kept a pointer into the unloaded module's
 * text (sk_clone_lock() copies callbacks) and this panicked the kernel.
 *
 * It unloads the module, so it runs alone (--jobs=1), and loads it back
 * (SPW_VM_MODULE, default the vm runner's copy) for the runner's checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static int sh(const char *cmd)
{
	int st = system(cmd);

	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void xfer(int from, int to, char c)
{
	char got = 0;

	cr_assert_eq(send(from, &c, 1, MSG_NOSIGNAL), 1, "send: %s", strerror(errno));
	cr_assert_eq(recv(to, &got, 1, 0), 1, "recv: %s", strerror(errno));
	cr_assert_eq(got, c);
}

Test(unload, plain_accepted_child_survives_group_close_and_rmmod, .timeout = 240)
{
	const char *mod = getenv("SPW_VM_MODULE") ?: "/run/spw-vm/module.ko";
	char cmd[512];
	int lfd[2], gfd, cfd[2], afd[2];

	t_listeners(lfd, 2, true, 16);
	gfd = t_group(lfd, 2, 8);
	for (unsigned i = 0; i < 2; i++) {
		cfd[i] = t_connect_id(t_port(lfd[0]), i);
		/* the accept loop below polls both members */
		fcntl(lfd[i], F_SETFL, fcntl(lfd[i], F_GETFL) | O_NONBLOCK);
	}
	/* the group placed tokens; we take the connections ourselves */
	unsigned n = 0;

	for (long end = t_now_ms() + 5000; n < 2 && t_now_ms() < end;) {
		for (unsigned m = 0; m < 2 && n < 2; m++) {
			int fd = accept4(lfd[m], NULL, NULL, SOCK_NONBLOCK);

			if (fd >= 0)
				afd[n++] = fd;
		}
		usleep(10000);
	}
	cr_assert_eq(n, 2u, "plain accept() got %u of 2", n);
	close(gfd);
	cr_assert_eq(sh("rmmod spillway"), 0, "rmmod failed");
	for (unsigned i = 0; i < 2; i++) {
		/* blocking again for the transfer */
		int off = 0;
		uint32_t id = t_read_id(afd[i]);

		cr_assert_eq(ioctl(afd[i], FIONBIO, &off), 0);
		cr_assert_lt(id, 2u);
		xfer(afd[i], cfd[id], 'a');
		xfer(cfd[id], afd[i], 'b');
	}
	snprintf(cmd, sizeof(cmd), "insmod '%s'", mod);
	cr_assert_eq(sh(cmd), 0, "insmod %s failed", mod);
	for (unsigned i = 0; i < 2; i++) {
		close(afd[i]);
		close(cfd[i]);
		close(lfd[i]);
	}
}
