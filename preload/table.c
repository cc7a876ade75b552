/* SPDX-License-Identifier: MIT */
/*
 * table.c: the preload's pure logic (see table.h). No interposition, no
 * syscalls: spw-preload.c does those and calls in here for decisions.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "table.h"

/* ------------------------------------------------------------------ */
/* fd -> entry map                                                     */

void *spw_pl_fdmap_get(const struct spw_pl_fdmap *m, int fd)
{
	void **chunk;

	if (fd < 0 || (unsigned)fd >= SPW_PL_MAX_FD)
		return NULL;
	/* pairs with the release in spw_pl_fdmap_set(): a chunk is zeroed first */
	chunk = __atomic_load_n(&m->chunks[(unsigned)fd >> SPW_PL_CHUNK_BITS], __ATOMIC_ACQUIRE);
	if (!chunk)
		return NULL;
	return __atomic_load_n(&chunk[(unsigned)fd & (SPW_PL_CHUNK - 1)], __ATOMIC_ACQUIRE);
}

int spw_pl_fdmap_set(struct spw_pl_fdmap *m, int fd, void *p)
{
	void **chunk, *old;
	unsigned hi, lo;

	if (fd < 0 || (unsigned)fd >= SPW_PL_MAX_FD)
		return -EBADF;
	hi = (unsigned)fd >> SPW_PL_CHUNK_BITS;
	lo = (unsigned)fd & (SPW_PL_CHUNK - 1);
	chunk = m->chunks[hi];
	if (!chunk) {
		if (!p)
			return 0;
		chunk = calloc(SPW_PL_CHUNK, sizeof(*chunk));
		if (!chunk)
			return -ENOMEM;
		__atomic_store_n(&m->chunks[hi], chunk, __ATOMIC_RELEASE);
	}
	old = chunk[lo];
	__atomic_store_n(&chunk[lo], p, __ATOMIC_RELEASE);
	if (!old && p)
		__atomic_store_n(&m->nr, m->nr + 1, __ATOMIC_RELAXED);
	else if (old && !p)
		__atomic_store_n(&m->nr, m->nr - 1, __ATOMIC_RELAXED);
	return 0;
}

/* ------------------------------------------------------------------ */
/* epoll registrations                                                 */

int spw_pl_regs_set(struct spw_pl_regs *regs, int epfd, const struct epoll_event *ev)
{
	unsigned i;

	for (i = 0; i < regs->nr; i++) {
		if (regs->r[i].epfd == epfd) {
			regs->r[i].ev = *ev;
			return 0;
		}
	}
	if (regs->nr == SPW_PL_MAX_REGS)
		return -ENOSPC;
	regs->r[regs->nr].epfd = epfd;
	regs->r[regs->nr].ev = *ev;
	regs->nr++;
	return 0;
}

int spw_pl_regs_del(struct spw_pl_regs *regs, int epfd)
{
	unsigned i;

	for (i = 0; i < regs->nr; i++) {
		if (regs->r[i].epfd == epfd) {
			regs->r[i] = regs->r[--regs->nr];
			return 0;
		}
	}
	return -ENOENT;
}

/* ------------------------------------------------------------------ */
/* accept() emulation                                                  */

int spw_pl_accept_flags(int flags, unsigned *spw_flags)
{
	if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
		return -EINVAL;
	*spw_flags = (flags & SOCK_NONBLOCK ? SPW_ACCEPT_NONBLOCK : 0) |
		     (flags & SOCK_CLOEXEC ? SPW_ACCEPT_CLOEXEC : 0);
	return 0;
}

int spw_pl_addr_args_ok(const struct sockaddr *addr, const socklen_t *len)
{
	if (!addr)
		return 0;	/* accept() ignores the length without an address */
	if (!len)
		return -EFAULT;
	if ((int)*len < 0)
		return -EINVAL;
	return 0;
}

void spw_pl_copy_sockaddr(const struct sockaddr_storage *ss, socklen_t full,
			  struct sockaddr *addr, socklen_t *len)
{
	if (!addr)
		return;
	memcpy(addr, ss, *len < full ? *len : full);
	*len = full;
}

int spw_pl_copy_addr(const struct spw_addr *a, struct sockaddr *addr, socklen_t *len)
{
	struct sockaddr_storage ss;
	unsigned full = sizeof(ss);
	int ret;

	if (!addr)
		return 0;
	ret = spw_addr_to_sockaddr(a, (struct sockaddr *)&ss, &full);
	if (ret)
		return ret;
	spw_pl_copy_sockaddr(&ss, full, addr, len);
	return 0;
}

socklen_t spw_pl_handoff_name(unsigned long dev, unsigned long ino, unsigned member,
			      struct sockaddr_un *sun)
{
	int n;

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	/* abstract: sun_path[0] is NUL, and the name is exactly n bytes after it */
	n = snprintf(sun->sun_path + 1, sizeof(sun->sun_path) - 1, "spillway-preload/%lx/%lx/%u",
		     dev, ino, member);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

bool spw_pl_flags_want(struct spw_pl_flags *f, unsigned want, unsigned tail)
{
	if (f->flags == want)
		return false;
	f->flags = want;
	/* CQEs already posted were installed with the old flags */
	f->known_from = tail;
	return true;
}

bool spw_pl_flags_known(const struct spw_pl_flags *f, unsigned idx)
{
	/* another thread's enter may post with flags it read before ours */
	if (f->sleepers)
		return false;
	/* free-running u32 indices: "at or after" is a signed difference */
	return (int)(idx - f->known_from) >= 0;
}

/* ------------------------------------------------------------------ */
/* listeners into groups                                               */

bool spw_pl_same_addr(const struct sockaddr_storage *a, socklen_t alen,
		      const struct sockaddr_storage *b, socklen_t blen)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		if (alen < sizeof(*x) || blen < sizeof(*y))
			return false;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		if (alen < sizeof(*x) || blen < sizeof(*y))
			return false;
		return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
		       !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
	}
	return false;
}

unsigned spw_pl_group_by_addr(const struct sockaddr_storage *addrs, const socklen_t *lens,
			      unsigned n, unsigned *group)
{
	unsigned i, j, groups = 0;

	/* O(n^2), n being the listeners made since the last fork: tens */
	for (i = 0; i < n; i++) {
		group[i] = i;
		for (j = 0; j < i; j++) {
			if (group[j] == j && spw_pl_same_addr(&addrs[i], lens[i], &addrs[j], lens[j])) {
				group[i] = j;
				break;
			}
		}
		if (group[i] == i)
			groups++;
	}
	return groups;
}

void spw_pl_addr_str(const struct sockaddr_storage *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)a;

		inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(s->sin_port));
	} else if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)a;

		inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(s->sin6_port));
	} else {
		snprintf(buf, len, "(family %u)", a->ss_family);
	}
}

/* ------------------------------------------------------------------ */
/* the environment                                                     */

/* A decimal unsigned in [0, max]; false for anything else. */
static bool parse_uint(const char *s, unsigned long max, unsigned *out)
{
	unsigned long v;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*out = (unsigned)v;
	return true;
}

static void err_add(char *err, size_t errlen, const char *name, const char *val)
{
	size_t used = strlen(err);

	if (used < errlen)
		snprintf(err + used, errlen - used, "%sbad %s=\"%s\"", used ? ", " : "", name, val);
}

void spw_pl_parse_params(const char *(*get)(const char *name), struct spw_group_params *p,
			 char *err, size_t errlen)
{
	static const char *const policies[] = {
		[SPW_POLICY_ORIGIN] = "origin",
		[SPW_POLICY_LEAST] = "least",
		[SPW_POLICY_P2C] = "p2c",
		[SPW_POLICY_CPU] = "cpu",
	};
	const char *v;
	unsigned n, i;

	memset(p, 0, sizeof(*p));
	if (errlen)
		err[0] = '\0';

	v = get("SPW_RING_ENTRIES");
	if (v && *v) {
		/* the module wants a power of two; say so here rather than fail later */
		if (parse_uint(v, SPW_MAX_RING_ENTRIES, &n) && n && !(n & (n - 1)))
			p->ring_entries = n;
		else
			err_add(err, errlen, "SPW_RING_ENTRIES", v);
	}
	v = get("SPW_POLICY");
	if (v && *v) {
		bool ok = false;

		for (i = 1; i < sizeof(policies) / sizeof(policies[0]); i++) {
			if (policies[i] && !strcmp(v, policies[i])) {
				p->policy = i;
				ok = true;
			}
		}
		if (!ok && parse_uint(v, SPW_POLICY_MAX, &n)) {
			p->policy = n;
			ok = true;
		}
		if (!ok)
			err_add(err, errlen, "SPW_POLICY", v);
	}
	v = get("SPW_STALL_MS");
	if (v && *v) {
		if (!strcmp(v, "off"))
			p->stall_ms = SPW_STALL_OFF;
		else if (parse_uint(v, 3600000, &n))
			p->stall_ms = n;
		else
			err_add(err, errlen, "SPW_STALL_MS", v);
	}
}

int spw_pl_desc_add(char *buf, size_t len, int gfd, const int *fds, unsigned nr)
{
	size_t start = strlen(buf), used = start;
	unsigned i;
	int n;

	n = snprintf(buf + used, len - used, "%s%d:", used ? ";" : "", gfd);
	if (n < 0 || (size_t)n >= len - used)
		goto nospc;
	used += (size_t)n;
	for (i = 0; i < nr; i++) {
		if (fds[i] >= 0)
			n = snprintf(buf + used, len - used, "%s%d", i ? "," : "", fds[i]);
		else
			n = snprintf(buf + used, len - used, "%s-", i ? "," : "");
		if (n < 0 || (size_t)n >= len - used)
			goto nospc;
		used += (size_t)n;
	}
	return 0;
nospc:
	/* all or nothing: a half-written group would be parsed as a smaller one */
	buf[start] = '\0';
	return -ENOSPC;
}

/* A non-negative decimal int; advances *s past it. */
static bool parse_fd(const char **s, int *out)
{
	const char *p = *s;
	long v = 0;

	if (*p < '0' || *p > '9')
		return false;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (*p - '0');
		if (v > INT_MAX)
			return false;
		p++;
	}
	*out = (int)v;
	*s = p;
	return true;
}

int spw_pl_desc_parse(const char *s, int (*fn)(void *arg, int gfd, const int *fds, unsigned nr),
		      void *arg)
{
	int fds[SPW_PL_MAX_MEMBERS];
	int groups = 0, gfd, ret;
	unsigned nr;

	if (!s || !*s)
		return 0;
	for (;;) {
		if (!parse_fd(&s, &gfd) || *s != ':')
			return -EINVAL;
		s++;
		nr = 0;
		for (;;) {
			if (nr == SPW_PL_MAX_MEMBERS)
				return -EINVAL;
			if (*s == '-') {
				fds[nr++] = -1;
				s++;
			} else if (!parse_fd(&s, &fds[nr++])) {
				return -EINVAL;
			}
			if (*s != ',')
				break;
			s++;
		}
		if (*s && *s != ';')
			return -EINVAL;
		ret = fn(arg, gfd, fds, nr);
		if (ret < 0)
			return ret;
		groups++;
		if (!*s)
			return groups;
		s++;	/* ';' */
	}
}

/* Whether the LD_PRELOAD value @list names @path (or a file of the same name). */
static bool preload_has(const char *list, const char *path)
{
	const char *base = strrchr(path, '/');
	size_t blen;

	base = base ? base + 1 : path;
	blen = strlen(base);
	while (*list) {
		size_t n = strcspn(list, " :");
		const char *w = list, *wb;

		list += n;
		while (*list == ' ' || *list == ':')
			list++;
		if (!n)
			continue;
		/* the same file name: another build of the preload counts too */
		wb = memrchr(w, '/', n);
		wb = wb ? wb + 1 : w;
		if ((size_t)(w + n - wb) == blen && !memcmp(wb, base, blen))
			return true;
	}
	return false;
}

char **spw_pl_env_build(char *const envp[], const char *const set[], unsigned nr_set,
			const char *preload)
{
	static const char ldp[] = "LD_PRELOAD=";
	size_t n = 0, strings = 0, i, j, k = 0;
	const char *old_ldp = NULL;
	char **out, *s;

	for (n = 0; envp && envp[n]; n++)
		if (!strncmp(envp[n], ldp, sizeof(ldp) - 1))
			old_ldp = envp[n] + sizeof(ldp) - 1;
	if (preload && old_ldp && preload_has(old_ldp, preload))
		preload = NULL;
	if (preload)
		strings += sizeof(ldp) + strlen(preload) + (old_ldp ? strlen(old_ldp) + 1 : 0);

	/* one block: the pointer array, then the one new string it needs */
	out = malloc((n + nr_set + 2) * sizeof(*out) + strings);
	if (!out)
		return NULL;
	s = (char *)(out + n + nr_set + 2);

	for (i = 0; i < n; i++) {
		const char *eq = strchr(envp[i], '=');
		size_t nlen = eq ? (size_t)(eq - envp[i]) : strlen(envp[i]);
		bool replaced = false;

		for (j = 0; j < nr_set; j++) {
			if (!strncmp(set[j], envp[i], nlen) && set[j][nlen] == '=') {
				replaced = true;
				break;
			}
		}
		if (replaced)
			continue;
		if (preload && !strncmp(envp[i], ldp, sizeof(ldp) - 1))
			continue;	/* rewritten below */
		out[k++] = envp[i];
	}
	for (j = 0; j < nr_set; j++)
		out[k++] = (char *)set[j];
	if (preload) {
		/* ours first: the module's accept must be seen before any other wrapper's */
		if (old_ldp && *old_ldp)
			sprintf(s, "%s%s:%s", ldp, preload, old_ldp);
		else
			sprintf(s, "%s%s", ldp, preload);
		out[k++] = s;
	}
	out[k] = NULL;
	return out;
}
