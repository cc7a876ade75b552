/* SPDX-License-Identifier: MIT */
/*
 * test_table: libspillway-preload's pure logic on the host — the fd map,
 * epoll registrations, accept()'s flags and address copy-out, the
 * per-ring flag bookkeeping, grouping by address, the environment and
 * the exec hand-over description.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "table.h"

/* ---- fd map ---- */

Test(fdmap, set_get_unmap_and_count)
{
	static struct spw_pl_fdmap m;
	int a, b;

	cr_assert(spw_pl_fdmap_empty(&m));
	cr_assert_null(spw_pl_fdmap_get(&m, 5));
	cr_assert_eq(spw_pl_fdmap_set(&m, 5, &a), 0);
	cr_assert_eq(spw_pl_fdmap_set(&m, 5000, &b), 0);	/* another chunk */
	cr_assert_eq(spw_pl_fdmap_get(&m, 5), &a);
	cr_assert_eq(spw_pl_fdmap_get(&m, 5000), &b);
	cr_assert_null(spw_pl_fdmap_get(&m, 6));
	cr_assert_null(spw_pl_fdmap_get(&m, 4999));
	cr_assert_eq(m.nr, 2);
	cr_assert_eq(spw_pl_fdmap_set(&m, 5, &b), 0);	/* replace: count unchanged */
	cr_assert_eq(m.nr, 2);
	cr_assert_eq(spw_pl_fdmap_set(&m, 5, NULL), 0);
	cr_assert_eq(spw_pl_fdmap_set(&m, 5, NULL), 0);	/* twice: no underflow */
	cr_assert_eq(spw_pl_fdmap_set(&m, 5000, NULL), 0);
	cr_assert(spw_pl_fdmap_empty(&m));
	cr_assert_eq(spw_pl_fdmap_set(&m, 900000, NULL), 0);	/* unmap in a missing chunk */
}

Test(fdmap, out_of_range_fds_are_never_tracked)
{
	static struct spw_pl_fdmap m;
	int a;

	cr_assert_eq(spw_pl_fdmap_set(&m, -1, &a), -EBADF);
	cr_assert_eq(spw_pl_fdmap_set(&m, SPW_PL_MAX_FD, &a), -EBADF);
	cr_assert_eq(spw_pl_fdmap_set(&m, SPW_PL_MAX_FD - 1, &a), 0);
	cr_assert_null(spw_pl_fdmap_get(&m, -1));
	cr_assert_null(spw_pl_fdmap_get(&m, SPW_PL_MAX_FD));
	cr_assert_eq(spw_pl_fdmap_get(&m, SPW_PL_MAX_FD - 1), &a);
}

/* ---- epoll registrations ---- */

Test(regs, set_update_delete)
{
	struct spw_pl_regs r = { .nr = 0 };
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 1 };
	int i;

	cr_assert_eq(spw_pl_regs_set(&r, 7, &ev), 0);
	ev.events = EPOLLIN | EPOLLET;
	cr_assert_eq(spw_pl_regs_set(&r, 7, &ev), 0);	/* MOD updates in place */
	cr_assert_eq(r.nr, 1);
	cr_assert_eq(r.r[0].ev.events, EPOLLIN | EPOLLET);
	for (i = 8; i < 8 + SPW_PL_MAX_REGS - 1; i++)
		cr_assert_eq(spw_pl_regs_set(&r, i, &ev), 0);
	cr_assert_eq(spw_pl_regs_set(&r, 99, &ev), -ENOSPC);
	cr_assert_eq(spw_pl_regs_del(&r, 7), 0);
	cr_assert_eq(spw_pl_regs_del(&r, 7), -ENOENT);
	cr_assert_eq(r.nr, SPW_PL_MAX_REGS - 1);
	cr_assert_eq(spw_pl_regs_set(&r, 99, &ev), 0);
}

/* ---- accept() emulation ---- */

Test(accept, flags_map_and_reject_unknown_bits)
{
	unsigned f = 77;

	cr_assert_eq(spw_pl_accept_flags(0, &f), 0);
	cr_assert_eq(f, 0);
	cr_assert_eq(spw_pl_accept_flags(SOCK_NONBLOCK | SOCK_CLOEXEC, &f), 0);
	cr_assert_eq(f, SPW_ACCEPT_NONBLOCK | SPW_ACCEPT_CLOEXEC);
	cr_assert_eq(spw_pl_accept_flags(SOCK_NONBLOCK | 1, &f), -EINVAL);
	cr_assert_eq(spw_pl_accept_flags(-1, &f), -EINVAL);
}

Test(accept, address_arguments_are_checked_before_consuming)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin), neg = (socklen_t)-1;

	cr_assert_eq(spw_pl_addr_args_ok(NULL, NULL), 0);
	cr_assert_eq(spw_pl_addr_args_ok(NULL, &neg), 0);	/* ignored without an address */
	cr_assert_eq(spw_pl_addr_args_ok((void *)&sin, &len), 0);
	cr_assert_eq(spw_pl_addr_args_ok((void *)&sin, NULL), -EFAULT);
	cr_assert_eq(spw_pl_addr_args_ok((void *)&sin, &neg), -EINVAL);
}

static struct spw_addr v4(const char *ip, unsigned port)
{
	struct spw_addr a = { .family = AF_INET, .port = port };

	inet_pton(AF_INET, ip, &a.addr[0]);
	return a;
}

Test(accept, address_copy_out_full_truncated_none)
{
	struct spw_addr a = v4("10.1.2.3", 4242);
	unsigned char buf[sizeof(struct sockaddr_storage)];
	struct sockaddr_in *sin = (void *)buf;
	socklen_t len;

	memset(buf, 0xee, sizeof(buf));
	len = sizeof(buf);
	cr_assert_eq(spw_pl_copy_addr(&a, (void *)buf, &len), 0);
	cr_assert_eq(len, sizeof(struct sockaddr_in));
	cr_assert_eq(sin->sin_family, AF_INET);
	cr_assert_eq(ntohs(sin->sin_port), 4242);
	cr_assert_eq(sin->sin_addr.s_addr, a.addr[0]);
	cr_assert_eq(buf[len], 0xee, "nothing written past the address");

	/* truncated: the first 5 bytes, and the full length back */
	memset(buf, 0xee, sizeof(buf));
	len = 5;
	cr_assert_eq(spw_pl_copy_addr(&a, (void *)buf, &len), 0);
	cr_assert_eq(len, sizeof(struct sockaddr_in));
	cr_assert_eq(sin->sin_family, AF_INET);
	cr_assert_eq(buf[2], 4242 >> 8);
	cr_assert_eq(buf[4], 10);
	cr_assert_eq(buf[5], 0xee);

	/* zero length: nothing copied, the length still told */
	memset(buf, 0xee, sizeof(buf));
	len = 0;
	cr_assert_eq(spw_pl_copy_addr(&a, (void *)buf, &len), 0);
	cr_assert_eq(len, sizeof(struct sockaddr_in));
	cr_assert_eq(buf[0], 0xee);

	/* no address: the length is not touched */
	len = 3;
	cr_assert_eq(spw_pl_copy_addr(&a, NULL, &len), 0);
	cr_assert_eq(len, 3);
}

Test(accept, ipv6_address_with_scope)
{
	struct spw_addr a = { .family = AF_INET6, .port = 443, .scope_id = 3 };
	struct sockaddr_in6 s6;
	socklen_t len = sizeof(s6);

	inet_pton(AF_INET6, "fe80::1", a.addr);
	cr_assert_eq(spw_pl_copy_addr(&a, (void *)&s6, &len), 0);
	cr_assert_eq(len, sizeof(s6));
	cr_assert_eq(s6.sin6_scope_id, 3);
	cr_assert_eq(ntohs(s6.sin6_port), 443);
	cr_assert_eq(memcmp(&s6.sin6_addr, a.addr, 16), 0);

	a.family = 12345;
	cr_assert_eq(spw_pl_copy_addr(&a, (void *)&s6, &len), -EAFNOSUPPORT);
}

Test(accept, sockaddr_copy_out_as_accept_does)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (void *)&ss;
	unsigned char buf[32];
	socklen_t len;

	memset(&ss, 0, sizeof(ss));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(80);
	memset(buf, 0xee, sizeof(buf));
	len = 4;
	spw_pl_copy_sockaddr(&ss, sizeof(*sin), (void *)buf, &len);
	cr_assert_eq(len, sizeof(*sin));
	cr_assert_eq(memcmp(buf, &ss, 4), 0);
	cr_assert_eq(buf[4], 0xee);
	len = sizeof(buf);
	spw_pl_copy_sockaddr(&ss, sizeof(*sin), (void *)buf, &len);
	cr_assert_eq(len, sizeof(*sin));
	cr_assert_eq(memcmp(buf, &ss, sizeof(*sin)), 0);
	cr_assert_eq(buf[sizeof(*sin)], 0xee);
	len = 9;
	spw_pl_copy_sockaddr(&ss, 0, (void *)buf, &len);	/* getpeername failed: empty */
	cr_assert_eq(len, 0);
}

Test(handoff, names_are_abstract_and_distinct)
{
	struct sockaddr_un a, b;
	socklen_t la, lb;

	la = spw_pl_handoff_name(0xd, 0x1234, 0, &a);
	lb = spw_pl_handoff_name(0xd, 0x1234, 1, &b);
	cr_assert_eq(a.sun_family, AF_UNIX);
	cr_assert_eq(a.sun_path[0], '\0', "abstract namespace");
	cr_assert_str_eq(a.sun_path + 1, "spillway-preload/d/1234/0");
	cr_assert_eq(la, offsetof(struct sockaddr_un, sun_path) + 1 + strlen(a.sun_path + 1),
		     "the length covers the name and no trailing NUL");
	cr_assert(la != lb || memcmp(&a, &b, la), "members differ");
	lb = spw_pl_handoff_name(0xd, 0x1235, 0, &b);
	cr_assert(la != lb || memcmp(&a, &b, la), "groups differ");
	lb = spw_pl_handoff_name(0xd, 0x1234, 0, &b);
	cr_assert(la == lb && !memcmp(&a, &b, la), "the same member of the same group: one name");
}

Test(flags, cqes_before_a_change_are_unknown)
{
	struct spw_pl_flags f = { .flags = SPW_ACCEPT_CLOEXEC, .known_from = 10 };

	cr_assert(spw_pl_flags_known(&f, 10));
	cr_assert(!spw_pl_flags_known(&f, 9));
	cr_assert(!spw_pl_flags_want(&f, SPW_ACCEPT_CLOEXEC, 20), "same flags: no change");
	cr_assert_eq(f.known_from, 10);
	cr_assert(spw_pl_flags_want(&f, SPW_ACCEPT_NONBLOCK, 20));
	cr_assert_eq(f.flags, SPW_ACCEPT_NONBLOCK);
	cr_assert(!spw_pl_flags_known(&f, 19), "posted before the change");
	cr_assert(spw_pl_flags_known(&f, 20));
	f.sleepers = 1;
	cr_assert(!spw_pl_flags_known(&f, 25), "another thread's enter may be older");
}

Test(flags, indices_wrap_around_u32)
{
	struct spw_pl_flags f = { .flags = 0 };

	spw_pl_flags_want(&f, SPW_ACCEPT_NONBLOCK, 0xfffffffeU);
	cr_assert(spw_pl_flags_known(&f, 0xffffffffU));
	cr_assert(spw_pl_flags_known(&f, 1));
	cr_assert(!spw_pl_flags_known(&f, 0xfffffffdU));
}

/* ---- grouping ---- */

static struct sockaddr_storage ss4(const char *ip, unsigned port, socklen_t *len)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s = (void *)&ss;

	memset(&ss, 0, sizeof(ss));
	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	inet_pton(AF_INET, ip, &s->sin_addr);
	*len = sizeof(*s);
	return ss;
}

static struct sockaddr_storage ss6(const char *ip, unsigned port, unsigned scope, socklen_t *len)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *s = (void *)&ss;

	memset(&ss, 0, sizeof(ss));
	s->sin6_family = AF_INET6;
	s->sin6_port = htons(port);
	s->sin6_scope_id = scope;
	inet_pton(AF_INET6, ip, &s->sin6_addr);
	*len = sizeof(*s);
	return ss;
}

Test(groups, one_group_per_address_in_order)
{
	struct sockaddr_storage a[7];
	socklen_t l[7];
	unsigned g[7];

	a[0] = ss4("127.0.0.1", 8080, &l[0]);
	a[1] = ss4("127.0.0.1", 8080, &l[1]);
	a[2] = ss4("127.0.0.1", 8081, &l[2]);	/* another port */
	a[3] = ss4("127.0.0.2", 8080, &l[3]);	/* another address */
	a[4] = ss6("::1", 8080, 0, &l[4]);	/* another family */
	a[5] = ss4("127.0.0.1", 8080, &l[5]);
	a[6] = ss6("fe80::1", 8080, 2, &l[6]);
	cr_assert_eq(spw_pl_group_by_addr(a, l, 7, g), 5);
	cr_assert_eq(g[0], 0);
	cr_assert_eq(g[1], 0);
	cr_assert_eq(g[2], 2);
	cr_assert_eq(g[3], 3);
	cr_assert_eq(g[4], 4);
	cr_assert_eq(g[5], 0);
	cr_assert_eq(g[6], 6);
}

Test(groups, ipv6_scope_separates_and_short_lengths_never_match)
{
	struct sockaddr_storage a, b;
	socklen_t la, lb;
	char s[64];

	a = ss6("fe80::1", 80, 1, &la);
	b = ss6("fe80::1", 80, 2, &lb);
	cr_assert(!spw_pl_same_addr(&a, la, &b, lb));
	b = ss6("fe80::1", 80, 1, &lb);
	cr_assert(spw_pl_same_addr(&a, la, &b, lb));
	cr_assert(!spw_pl_same_addr(&a, 8, &b, lb));
	spw_pl_addr_str(&a, s, sizeof(s));
	cr_assert_str_eq(s, "[fe80::1]:80");
	a = ss4("127.0.0.1", 8080, &la);
	spw_pl_addr_str(&a, s, sizeof(s));
	cr_assert_str_eq(s, "127.0.0.1:8080");
}

/* ---- environment ---- */

static const char *const *test_env;

static const char *get(const char *name)
{
	size_t n = strlen(name);

	for (const char *const *e = test_env; *e; e++)
		if (!strncmp(*e, name, n) && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

Test(env, defaults_when_unset)
{
	static const char *const e[] = { NULL };
	struct spw_group_params p;
	char err[128];

	test_env = e;
	spw_pl_parse_params(get, &p, err, sizeof(err));
	cr_assert_eq(p.ring_entries, 0);
	cr_assert_eq(p.policy, 0);
	cr_assert_eq(p.stall_ms, 0);
	cr_assert_str_empty(err);
}

Test(env, good_values)
{
	static const char *const e[] = { "SPW_RING_ENTRIES=256", "SPW_POLICY=least",
					 "SPW_STALL_MS=50", NULL };
	static const char *const names[] = { "origin", "least", "p2c", "cpu" };
	static const unsigned want[] = { SPW_POLICY_ORIGIN, SPW_POLICY_LEAST, SPW_POLICY_P2C,
					 SPW_POLICY_CPU };
	struct spw_group_params p;
	char err[128], var[32];
	const char *e2[3] = { var, "SPW_STALL_MS=off", NULL };

	test_env = e;
	spw_pl_parse_params(get, &p, err, sizeof(err));
	cr_assert_eq(p.ring_entries, 256);
	cr_assert_eq(p.policy, SPW_POLICY_LEAST);
	cr_assert_eq(p.stall_ms, 50);
	cr_assert_str_empty(err);
	for (unsigned i = 0; i < 4; i++) {
		snprintf(var, sizeof(var), "SPW_POLICY=%s", names[i]);
		test_env = e2;
		spw_pl_parse_params(get, &p, err, sizeof(err));
		cr_assert_eq(p.policy, want[i], "%s", names[i]);
		cr_assert_eq(p.stall_ms, SPW_STALL_OFF);
	}
}

Test(env, bad_values_are_named_and_left_at_default)
{
	static const char *const e[] = { "SPW_RING_ENTRIES=100", "SPW_POLICY=fastest",
					 "SPW_STALL_MS=-3", NULL };
	static const char *const e2[] = { "SPW_RING_ENTRIES=65536", "SPW_POLICY=9", NULL };
	struct spw_group_params p;
	char err[256];

	test_env = e;
	spw_pl_parse_params(get, &p, err, sizeof(err));
	cr_assert_eq(p.ring_entries, 0);
	cr_assert_eq(p.policy, 0);
	cr_assert_eq(p.stall_ms, 0);
	cr_assert(strstr(err, "SPW_RING_ENTRIES=\"100\""), "%s", err);
	cr_assert(strstr(err, "SPW_POLICY=\"fastest\""), "%s", err);
	cr_assert(strstr(err, "SPW_STALL_MS=\"-3\""), "%s", err);
	test_env = e2;
	spw_pl_parse_params(get, &p, err, sizeof(err));
	cr_assert_eq(p.ring_entries, 0, "above SPW_MAX_RING_ENTRIES");
	cr_assert_eq(p.policy, 0, "above SPW_POLICY_MAX");
}

/* ---- exec hand-over ---- */

struct seen {
	int gfd[4];
	int fds[4][8];
	unsigned nr[4];
	unsigned groups;
};

static int collect(void *arg, int gfd, const int *fds, unsigned nr)
{
	struct seen *s = arg;

	s->gfd[s->groups] = gfd;
	s->nr[s->groups] = nr;
	memcpy(s->fds[s->groups], fds, nr * sizeof(*fds));
	s->groups++;
	return 0;
}

Test(desc, round_trip_with_missing_members)
{
	char buf[128] = "";
	int a[] = { 5, 6, -1, 8 }, b[] = { 12 };
	struct seen s = { .groups = 0 };

	cr_assert_eq(spw_pl_desc_add(buf, sizeof(buf), 9, a, 4), 0);
	cr_assert_eq(spw_pl_desc_add(buf, sizeof(buf), 11, b, 1), 0);
	cr_assert_str_eq(buf, "9:5,6,-,8;11:12");
	cr_assert_eq(spw_pl_desc_parse(buf, collect, &s), 2);
	cr_assert_eq(s.gfd[0], 9);
	cr_assert_eq(s.nr[0], 4);
	cr_assert_eq(s.fds[0][2], -1);
	cr_assert_eq(s.fds[0][3], 8);
	cr_assert_eq(s.gfd[1], 11);
	cr_assert_eq(s.nr[1], 1);
	cr_assert_eq(s.fds[1][0], 12);
}

Test(desc, all_or_nothing_when_full)
{
	char buf[12] = "";
	int a[] = { 5, 6 }, b[] = { 100, 101, 102 };

	cr_assert_eq(spw_pl_desc_add(buf, sizeof(buf), 9, a, 2), 0);
	cr_assert_eq(spw_pl_desc_add(buf, sizeof(buf), 11, b, 3), -ENOSPC);
	cr_assert_str_eq(buf, "9:5,6");
}

Test(desc, malformed_is_rejected)
{
	static const char *const bad[] = { "x", "9", "9:", "9:a", "9:5,", "9:5;;", "9:5-",
					   "-1:5", "9:5,6;x:1" };
	struct seen s;

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&s, 0, sizeof(s));
		cr_assert_lt(spw_pl_desc_parse(bad[i], collect, &s), 0, "'%s'", bad[i]);
	}
	memset(&s, 0, sizeof(s));
	cr_assert_eq(spw_pl_desc_parse("", collect, &s), 0);
}

static const char *env_find(char **env, const char *name)
{
	size_t n = strlen(name);

	for (; *env; env++)
		if (!strncmp(*env, name, n) && (*env)[n] == '=')
			return *env + n + 1;
	return NULL;
}

static unsigned env_count(char **env)
{
	unsigned n = 0;

	while (env[n])
		n++;
	return n;
}

Test(execenv, nginx_style_environment_gets_preload_and_groups)
{
	/* what nginx hands its new binary: NGINX=fds and a spare, nothing else */
	char *const envp[] = { "NGINX=5;6;7;8;", "SPARE=XXXX", NULL };
	const char *const set[] = { "SPW_PRELOAD_GROUPS=9:5,6,7,8", "SPW_STALL_MS=30" };
	char **env = spw_pl_env_build(envp, set, 2, "/opt/x/libspillway-preload.so");

	cr_assert_not_null(env);
	cr_assert_eq(env_count(env), 5);
	cr_assert_str_eq(env_find(env, "NGINX"), "5;6;7;8;");
	cr_assert_str_eq(env_find(env, "SPW_PRELOAD_GROUPS"), "9:5,6,7,8");
	cr_assert_str_eq(env_find(env, "SPW_STALL_MS"), "30");
	cr_assert_str_eq(env_find(env, "LD_PRELOAD"), "/opt/x/libspillway-preload.so");
	free(env);
}

Test(execenv, existing_variables_are_replaced_and_preload_kept_once)
{
	char *const envp[] = { "LD_PRELOAD=/usr/lib/libspillway-preload.so other.so",
			       "SPW_PRELOAD_GROUPS=old", "PATH=/bin", NULL };
	char *const envp2[] = { "LD_PRELOAD=/lib/libfoo.so", NULL };
	const char *const set[] = { "SPW_PRELOAD_GROUPS=3:4" };
	char **env = spw_pl_env_build(envp, set, 1, "/build/preload/libspillway-preload.so");

	cr_assert_not_null(env);
	cr_assert_eq(env_count(env), 3);
	cr_assert_str_eq(env_find(env, "SPW_PRELOAD_GROUPS"), "3:4");
	cr_assert_str_eq(env_find(env, "LD_PRELOAD"), "/usr/lib/libspillway-preload.so other.so",
			 "a preload of the same name is already there");
	free(env);

	env = spw_pl_env_build(envp2, set, 1, "/b/libspillway-preload.so");
	cr_assert_str_eq(env_find(env, "LD_PRELOAD"), "/b/libspillway-preload.so:/lib/libfoo.so");
	free(env);

	env = spw_pl_env_build(NULL, NULL, 0, NULL);
	cr_assert_not_null(env);
	cr_assert_null(env[0]);
	free(env);
}
