/* SPDX-License-Identifier: MIT */
/*
 * table.h: the pure logic of libspillway-preload — which fd is which
 * listener, how accept()'s flags and address are emulated from a CQE,
 * how the environment is read, how groups survive an exec.
 *
 * Nothing here interposes or makes a syscall (beyond what libspillway's
 * address conversion does, which is none), so all of it is unit-tested
 * on a host without the module (preload/test_table.c).
 */
#ifndef SPW_PRELOAD_TABLE_H
#define SPW_PRELOAD_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "spillway.h"

/* ------------------------------------------------------------------ */
/* fd -> entry map                                                     */

/*
 * Two levels of 1024, so fds up to 2^20 (any sane RLIMIT_NOFILE); a
 * listener with a higher number is simply not tracked (passed through).
 * Readers need no lock: close(), epoll_ctl() and poll() run on every
 * connection, and for an untracked fd the answer must cost two loads.
 * Writers hold the preload's mutex. Chunks are never freed.
 */
#define SPW_PL_CHUNK_BITS	10
#define SPW_PL_CHUNK		(1U << SPW_PL_CHUNK_BITS)
#define SPW_PL_MAX_FD		(SPW_PL_CHUNK * SPW_PL_CHUNK)

struct spw_pl_fdmap {
	void **chunks[SPW_PL_CHUNK];	/* accessed with __atomic builtins */
	unsigned long nr;		/* fds mapped now */
};

/* The entry of @fd, or NULL; safe without the writers' lock. */
void *spw_pl_fdmap_get(const struct spw_pl_fdmap *m, int fd);
/* Map @fd to @p (NULL: unmap). 0, -EBADF (out of range) or -ENOMEM. */
int spw_pl_fdmap_set(struct spw_pl_fdmap *m, int fd, void *p);
/* True when no fd is mapped: every interposer's first test. */
static inline bool spw_pl_fdmap_empty(const struct spw_pl_fdmap *m)
{
	return __atomic_load_n(&m->nr, __ATOMIC_RELAXED) == 0;
}

/* ------------------------------------------------------------------ */
/* epoll registrations of one listener                                 */

/*
 * A worker may register its listener in more than one epoll set (rare)
 * and the preload must be able to move every registration between the
 * listener and its ring fd, so each one is remembered.
 */
#define SPW_PL_MAX_REGS	4

struct spw_pl_reg {
	int epfd;
	struct epoll_event ev;
};

struct spw_pl_regs {
	struct spw_pl_reg r[SPW_PL_MAX_REGS];
	unsigned nr;
};

/* Remember (or update) the registration in @epfd. -ENOSPC when full. */
int spw_pl_regs_set(struct spw_pl_regs *regs, int epfd, const struct epoll_event *ev);
/* Forget the registration in @epfd; -ENOENT if there was none. */
int spw_pl_regs_del(struct spw_pl_regs *regs, int epfd);

/* ------------------------------------------------------------------ */
/* accept() emulation                                                  */

/*
 * accept4()'s @flags as SPW_ACCEPT_* (the same bits): -EINVAL for any
 * other bit, as accept4() itself says.
 */
int spw_pl_accept_flags(int flags, unsigned *spw_flags);

/*
 * Check accept()'s address arguments before a CQE is consumed, so that
 * a bad call leaves the connection in the ring: -EFAULT for an address
 * without a length, -EINVAL for a length that is negative as an int.
 */
int spw_pl_addr_args_ok(const struct sockaddr *addr, const socklen_t *len);

/*
 * Copy @ss (@full bytes long) out exactly as accept() copies the peer:
 * nothing when @addr is NULL; otherwise the first min(*len, full) bytes,
 * and *len = full.
 */
void spw_pl_copy_sockaddr(const struct sockaddr_storage *ss, socklen_t full,
			  struct sockaddr *addr, socklen_t *len);
/* The same from a CQE's address: 0, or -EAFNOSUPPORT (a newer module's family). */
int spw_pl_copy_addr(const struct spw_addr *a, struct sockaddr *addr, socklen_t *len);

/*
 * Per ring: the accept flags the last enter asked for, and from which
 * CQE index on every CQE was installed with them. A CQE before that
 * index (posted before the caller changed its flags), or any CQE while
 * another thread sleeps in an enter of its own, has unknown flags and
 * its fd is fixed with fcntl().
 */
struct spw_pl_flags {
	unsigned flags;		/* SPW_ACCEPT_* of the last enter */
	unsigned known_from;	/* CQE index from which @flags hold */
	unsigned sleepers;	/* threads in a blocking enter */
};

/* The caller wants @want; @tail is the ring's tail now. True: changed. */
bool spw_pl_flags_want(struct spw_pl_flags *f, unsigned want, unsigned tail);
/* Whether the CQE at @idx surely carries f->flags. */
bool spw_pl_flags_known(const struct spw_pl_flags *f, unsigned idx);

/*
 * The abstract unix socket on which the next consumer of a member waits
 * for the connections its previous consumer was handed but will never
 * accept: named by the group file (its device and inode are the same in
 * every process that holds the group, across fork and exec) and the
 * member. Returns the address length for bind()/sendmsg().
 */
socklen_t spw_pl_handoff_name(unsigned long dev, unsigned long ino, unsigned member,
			      struct sockaddr_un *sun);

/* ------------------------------------------------------------------ */
/* listeners into groups                                               */

/* Same listening address (family, address, port, IPv6 scope)? */
bool spw_pl_same_addr(const struct sockaddr_storage *a, socklen_t alen,
		      const struct sockaddr_storage *b, socklen_t blen);
/*
 * Group @n addresses: @group[i] becomes the index of the first address
 * equal to addrs[i] (so each group is named by its first member, and
 * members keep their order). Returns the number of groups.
 */
unsigned spw_pl_group_by_addr(const struct sockaddr_storage *addrs, const socklen_t *lens,
			      unsigned n, unsigned *group);
/* "127.0.0.1:8080" / "[::1]:8080" for messages. */
void spw_pl_addr_str(const struct sockaddr_storage *a, char *buf, size_t len);

/* ------------------------------------------------------------------ */
/* the environment                                                     */

/*
 * SPW_RING_ENTRIES, SPW_POLICY (origin|least|p2c|cpu or a number),
 * SPW_STALL_MS (a number or "off") into @p, read through @get (getenv,
 * or a test's table). A bad value is left at the default and named in
 * @err (empty when all were good).
 */
void spw_pl_parse_params(const char *(*get)(const char *name), struct spw_group_params *p,
			 char *err, size_t errlen);

/*
 * The groups a process hands to the image it execs, in SPW_PL_ENV_GROUPS:
 * "GFD:FD0,FD1,-,FD3;GFD:..." — the group fd, then each member's
 * listener fd in member order, "-" for one not inherited.
 */
#define SPW_PL_ENV_GROUPS	"SPW_PRELOAD_GROUPS"
#define SPW_PL_MAX_MEMBERS	SPW_MAX_MEMBERS

/* Append one group to @buf (NUL-terminated). -ENOSPC when it does not fit. */
int spw_pl_desc_add(char *buf, size_t len, int gfd, const int *fds, unsigned nr);
/*
 * Parse @s, calling @fn once per group (fds[i] = -1 for "-"). Stops at
 * the first malformed group and returns -EINVAL; else the group count.
 */
int spw_pl_desc_parse(const char *s, int (*fn)(void *arg, int gfd, const int *fds, unsigned nr),
		      void *arg);

/*
 * A copy of @envp (NULL-terminated) in which each "NAME=value" of @set
 * replaces the variable of that name or is appended, and @preload is
 * added to LD_PRELOAD unless a word of it already names that file.
 * Returned as one malloc'd block (free() it). NULL on ENOMEM.
 */
char **spw_pl_env_build(char *const envp[], const char *const set[], unsigned nr_set,
			const char *preload);

#endif /* SPW_PRELOAD_TABLE_H */
