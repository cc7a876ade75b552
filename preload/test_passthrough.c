/* SPDX-License-Identifier: MIT */
/*
 * test_passthrough: libspillway-preload.so where the module is absent
 * (the build host has no /dev/spillway). pt-server, a pre-forking server
 * that makes every call the preload interposes, must work exactly as
 * without the preload, and the preload must say so once on stderr —
 * one line for the master and its three workers together.
 *
 * PT_SERVER and SPW_PRELOAD_SO name the two binaries (set by meson).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct run {
	int status;
	char out[4096];
	char err[4096];
};

static void slurp(int fd, char *buf, size_t len)
{
	size_t got = 0;
	ssize_t n;

	while (got < len - 1 && (n = read(fd, buf + got, len - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
}

/* Run pt-server with @preload (NULL: none) in LD_PRELOAD. */
static void run(struct run *r, const char *preload, const char *expect)
{
	const char *server = getenv("PT_SERVER");
	int out[2], err[2];
	pid_t pid;

	cr_assert_not_null(server, "PT_SERVER is not set");
	cr_assert_eq(pipe(out), 0);
	cr_assert_eq(pipe(err), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		close(out[0]);
		close(err[0]);
		if (preload)
			setenv("LD_PRELOAD", preload, 1);
		else
			unsetenv("LD_PRELOAD");
		execl(server, server, "-n", "30", "-e", expect, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	slurp(out[0], r->out, sizeof(r->out));
	slurp(err[0], r->err, sizeof(r->err));
	close(out[0]);
	close(err[0]);
	cr_assert_eq(waitpid(pid, &r->status, 0), pid);
}

static unsigned count_lines(const char *s, const char *needle)
{
	unsigned n = 0;

	for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

Test(passthrough, server_works_without_the_preload)
{
	struct run r;

	run(&r, NULL, "plain");
	cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "pt-server: %s%s", r.out,
		  r.err);
	cr_assert(strstr(r.out, "30 of 30 answered ok"), "%s", r.out);
}

Test(passthrough, server_works_with_the_preload_and_it_says_so_once)
{
	const char *so = getenv("SPW_PRELOAD_SO");
	struct run r;

	cr_assert_not_null(so, "SPW_PRELOAD_SO is not set");
	if (!access("/dev/spillway", F_OK))
		cr_skip_test("/dev/spillway exists here: the pass-through case needs it absent");
	run(&r, so, "plain");
	cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "pt-server: %s%s", r.out,
		  r.err);
	cr_assert(strstr(r.out, "30 of 30 answered ok, all plain"), "%s", r.out);
	cr_assert_eq(count_lines(r.err, "spillway-preload["), 1, "stderr: '%s'", r.err);
	cr_assert(strstr(r.err, "/dev/spillway: No such file or directory: passing through"),
		  "stderr: '%s'", r.err);
}
