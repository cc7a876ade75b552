/* SPDX-License-Identifier: GPL-2.0 */
/*
 * spw_internal.h - objects of the spillway module.
 *
 * Locking (outermost first):
 *
 *   spw_registry_lock mutex (spw_main.c); which sockets are members of
 *                     some group. Create and teardown only.
 *   group->open_lock  mutex; ring open/close and the lifetime of each
 *                     ring's shared memory.
 *   ring->post_lock   mutex; one CQ producer per ring at a time (two
 *                     threads may enter the same ring), and the ring's
 *                     owner (which file table its CQEs belong to). Held
 *                     across the accept, which locks the listener.
 *   group->lock       spinlock, BH-safe, process context and the stall
 *                     timer only: the group's life (@placing,
 *                     @hold_drops), stall detection (@stalled_work,
 *                     @steal_seq), each ring's state, liveness and shared
 *                     memory (written under the ring's lock too), and the
 *                     moves of many tokens (rehome, steal), which it
 *                     serialises. Never taken on the arrival path, nor by
 *                     an enter that has work of its own. Every hold is
 *                     bounded: at most SPW_BATCH tokens moved, or one
 *                     O(members) scan or copy (SPW_MAX_MEMBERS at most).
 *   listener wait-queue lock (sock->wq.wait.lock), irq-safe, the kernel's:
 *                     held by whoever wakes the listener's waiters, and so
 *                     around spw_member_wake(), our entry on that queue.
 *   member->lock      spinlock, BH-safe; taken with spin_lock_bh() in
 *                     process context and with plain spin_lock() inside
 *                     spw_member_wake() (softirq or process context, hard
 *                     IRQs already off under the wait-queue lock). One
 *                     listener's placements: @assigned, @drop_pending and
 *                     its arrival-side counters. The arrival path takes
 *                     this lock of its own listener and the target ring's
 *                     lock, nothing group-wide.
 *   ring->lock        spinlock, BH-safe (taken as member->lock is). The
 *                     ring's token FIFO, its accounting group->acct[idx]
 *                     (written with WRITE_ONCE(): the policy reads it
 *                     without this lock, spw_policy.h), its @hdr flags
 *                     and its ring-side counters. Two ring locks nest in
 *                     index order (steal, under group->lock).
 *   The policy's summary takes no lock (atomic bit operations).
 *
 * A ring's shared memory is read without a lock by placement decisions
 * (acct->khead, in softirq or with BHs off: RCU readers); the last close
 * points acct->khead elsewhere and waits a grace period before it frees
 * the pages.
 *
 * The module stores no pointer to itself in any object it does not own:
 * it learns of arrivals through a wait-queue entry it owns (struct
 * spw_member.wait) on the listener's wait queue, as epoll does, and
 * removing that entry (remove_wait_queue(), which waits out a running
 * callback by taking the same lock) is the whole undo. Children cloned
 * from a member carry nothing of ours.
 */
#ifndef SPW_INTERNAL_H
#define SPW_INTERNAL_H

#include <linux/bits.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/net.h>
#include <linux/refcount.h>
#include <linux/spinlock.h>
#include <linux/timer.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <uapi/linux/spillway.h>

#include "spw_policy.h"

/* Group-wide slots (members x ring entries) bound kernel memory. */
#define SPW_MAX_GROUP_SLOTS	BIT(18)

/*
 * Tokens moved per hold of group->lock when a ring's waiting connections
 * move (rehome, steal): a ring may hold SPW_MAX_RING_ENTRIES of them, and
 * the lock keeps bottom halves off on its CPU.
 */
#define SPW_BATCH		64

/*
 * Monotonic counters of one member: its listener's side under
 * member->lock, its ring's side under ring->lock. They balance when
 * nothing moves (a snapshot takes every lock, but a connection between
 * its two sides is counted on one only).
 */
struct spw_counters {
	u64 arrived;		/* member->lock */
	u64 spilled_out;	/* member->lock */
	u64 dropped;		/* member->lock: connections reset by the drop work */
	u64 stale;		/* member->lock: tokens whose accept found nothing */
	u64 delivered;		/* ring->lock */
	u64 spilled_in;		/* ring->lock */
	u64 rehomed;		/* ring->lock: tokens moved off this ring */
};

struct spw_group;

/* One listening socket of the group. */
struct spw_member {
	spinlock_t lock;		/* see the top of this file */
	struct spw_group *group;
	unsigned int idx;
	struct socket *sock;		/* holds a reference on sock->file */
	/* on sock->wq.wait while @hooked: how arrivals reach us */
	struct wait_queue_entry wait;
	struct hlist_node registry;	/* in spw_registry while registered */
	struct spw_addr bound;		/* the listener's address, for CQEs it serves */
	u32 saved_backlog;		/* sk_max_ack_backlog before we raised it */
	u32 raised_backlog;		/* what we set; 0: left as it was */
	bool registered;
	bool hooked;
	/*
	 * Under @lock: connections in this listener's accept queue that the
	 * group has placed: tokens in any ring, tokens being handed over,
	 * and drops not yet carried out. The arrival path places connections
	 * until @assigned reaches the queue length.
	 */
	unsigned int assigned;
	unsigned int drop_pending;
	struct spw_counters st;
};

/* One accept completion ring. Its accounting lives in group->acct[idx]. */
struct spw_ring {
	spinlock_t lock;		/* see the top of this file */
	struct spw_group *group;
	unsigned int idx;
	unsigned int state;		/* SPW_MEMBER_*; written under both locks */

	/*
	 * Token FIFO: "one connection from member tokens[i]". Free-running
	 * indices masked on use, under @lock (read without it, with
	 * READ_ONCE(), to ask whether any wait). Its length plus the tokens
	 * being handed over is acct->pending, never above entries.
	 */
	u32 *tokens;
	unsigned int tok_head;
	unsigned int tok_tail;

	/*
	 * Shared memory; exists while a consumer holds the ring open. @hdr is
	 * set and cleared under group->lock and @lock.
	 */
	struct spw_ring_hdr *hdr;
	struct spw_cqe *cqes;
	size_t bytes;
	struct page **pages;		/* backing @hdr, charged to the opener's memcg */
	unsigned int nr_pages;
	unsigned int nr_open;		/* ring files; under group->open_lock */
	unsigned int dummy_head;	/* acct->khead while there is no hdr */

	struct mutex post_lock;		/* see the top of this file */
	/*
	 * The file table the CQEs between head and tail were installed in
	 * (NULL: none), and its id as shared memory shows it (hdr->owner).
	 * Under post_lock; ->poll and ->flush read @owner without it, only
	 * to compare with their own table.
	 */
	struct files_struct *owner;
	u32 owner_id;
	wait_queue_head_t wq;
	/* steal_seq at the consumer's last enter: poll reports a steal since */
	unsigned int seen_seq;
	/*
	 * io_uring's SPW_URING_ACCEPT: SPW_URING_CANCEL's count, under
	 * wq.lock; the commands parked without a thread (kernels with
	 * io_uring_cmd_mark_cancelable()), under wq.lock, and the entry on
	 * @wq that hands them a connection while any is parked.
	 */
	unsigned int cancel_seq;
#ifdef SPW_HAVE_URING_CMD_CANCELABLE
	struct list_head parked;
	struct wait_queue_entry park_wait;
#endif
};

struct spw_group {
	spinlock_t lock;		/* see the top of this file */
	refcount_t ref;			/* group files + ring files */
	struct mutex open_lock;
	/*
	 * Written under lock, read without it: arrivals are placed. False
	 * until create succeeds (a failed create disturbs no client) and
	 * again from teardown on.
	 */
	bool placing;
	bool hold_drops;		/* under lock: create not finished */
	bool share_listeners;		/* SPW_GROUP_F_SHARE_LISTENERS */
	unsigned int nr;
	unsigned int entries;
	u64 id;				/* unique while the module is loaded (fdinfo) */
	unsigned long stall;		/* jiffies; SPW_STALL_NEVER: off */
	unsigned int stall_ms;		/* as asked, for fdinfo */
	/* the placement policy and its summary of where each ring stands */
	struct spw_policy policy;
	void *policy_mem;
	/*
	 * SPW_POLICY_CPU: [nr_cpu_ids], the ring whose consumer last ran
	 * there; a hint, written and read with WRITE_ONCE()/READ_ONCE()
	 */
	int *cpu_ring;
	/* the stall timer found stalled work: idle consumers look for a victim */
	bool stalled_work;
	/*
	 * Fires a stall time after a token lands on a ring whose consumer is
	 * not waiting; if the token still waits, idle consumers are woken to
	 * take it (@steal_seq tells them why they woke).
	 */
	struct timer_list stall_timer;
	unsigned int steal_seq;
	struct spw_ring_acct *acct;	/* [nr], scanned by the policy */
	struct spw_member *members;	/* [nr] */
	struct spw_ring *rings;		/* [nr] */
	/* resets drop_pending connections; re-armed after a transient error */
	struct delayed_work drop_work;
};

/* spw_main.c */
extern atomic_t spw_live_groups;
int spw_registry_add(struct spw_member *m);
void spw_registry_del(struct spw_member *m);
int spw_anon_fd(const char *name, const struct file_operations *fops,
		void *priv, int flags);

/* spw_group.c */
long spw_group_create(struct spw_group_create __user *uarg);
void spw_refile(struct spw_group *g, unsigned int idx);
void spw_clock_now(const struct spw_group *g, struct spw_clock *c);
bool spw_ring_steal_locked(struct spw_ring *r);
void spw_group_put(struct spw_group *g);
long spw_group_stats(struct spw_group *g, struct spw_group_stats __user *uarg);
void spw_reconcile_locked(struct spw_member *m);
void spw_token_retire_locked(struct spw_member *m);
void spw_ring_rehome(struct spw_ring *r, bool keep);
void spw_ring_work_posted_locked(struct spw_ring *r);
unsigned int spw_fifo_len(const struct spw_ring *r);
void spw_hdr_set_flags(struct spw_ring_hdr *hdr, u32 flags);
void spw_hdr_clear_flags(struct spw_ring_hdr *hdr, u32 flags);

/* spw_ring.c */
long spw_ring_open(struct spw_group *g, struct spw_ring_open __user *uarg);
int spw_ring_init(struct spw_ring *r, struct spw_group *g, unsigned int idx);
struct sockaddr_storage;
void spw_addr_fill(struct spw_addr *a, const struct sockaddr_storage *ss);
void spw_ring_free(struct spw_ring *r);

#endif /* SPW_INTERNAL_H */
