// SPDX-License-Identifier: GPL-2.0
/*
 * spw_group.c - accept groups: registration, learning of arrivals, placement
 * of connections on rings, drops, teardown and counters.
 *
 * Data path (token model): when a child socket joins member L's accept
 * queue, TCP wakes L's wait queue (sock_def_readable()), on which we keep
 * an entry of our own, as epoll does; its wake function places "one
 * connection from L" as a token on a ring chosen by spw_pick_ring(). The
 * connection itself stays in L's accept queue. The ring's consumer later
 * calls kernel_accept() on L in its own context (spw_ring.c). A token for
 * which no ring has room becomes a drop: a work item accepts one
 * connection from L and resets it. Every other waiter on L (accept(),
 * poll, epoll, io_uring) is woken as before: we only listen.
 */
#include <linux/atomic.h>
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/nsproxy.h>
#include <linux/random.h>
#include <linux/rcupdate.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/tcp.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <net/inet_connection_sock.h>
#include <net/net_namespace.h>
#include <net/request_sock.h>
#include <net/sock.h>

#include "spw_internal.h"

static const struct file_operations spw_group_fops;
static atomic64_t spw_next_group_id = ATOMIC64_INIT(0);

static void spw_ring_wake(struct spw_ring *r)
{
	if (wq_has_sleeper(&r->wq))
		wake_up_interruptible_poll(&r->wq, EPOLLIN | EPOLLRDNORM);
}

/*
 * hdr->flags is shared memory: set and clear its bits with atomic
 * operations, as io_uring does for sq_flags, so that no update is lost to
 * a plain read-modify-write (user space may write the word too; then it
 * only loses its own bits).
 */
void spw_hdr_set_flags(struct spw_ring_hdr *hdr, u32 flags)
{
	BUILD_BUG_ON(sizeof(atomic_t) != sizeof(hdr->flags));
	atomic_or(flags, (atomic_t *)&hdr->flags);
}

void spw_hdr_clear_flags(struct spw_ring_hdr *hdr, u32 flags)
{
	atomic_andnot(flags, (atomic_t *)&hdr->flags);
}

void spw_clock_now(const struct spw_group *g, struct spw_clock *c)
{
	c->now = (unsigned int)jiffies;
	c->stall = g->stall;
}

/* Tokens waiting on @r; exact under r->lock, a hint without it. */
unsigned int spw_fifo_len(const struct spw_ring *r)
{
	return READ_ONCE(r->tok_tail) - READ_ONCE(r->tok_head);
}

/*
 * Ring @idx's pending count, tail, liveness or consumer changed: re-file
 * it. Its writers call this under the ring's lock, so that their
 * re-filings land in order; a decision may re-file any ring without it.
 */
void spw_refile(struct spw_group *g, unsigned int idx)
{
	struct spw_clock clock;

	spw_clock_now(g, &clock);
	spw_sum_refile(&g->policy, g->acct, idx, &clock);
}

/* An idle consumer, asleep in enter or waiting in poll/epoll with nothing to do. */
static bool spw_ring_idle(const struct spw_ring_acct *a)
{
	return READ_ONCE(a->live) &&
	       (READ_ONCE(a->waiting) ||
		(READ_ONCE(a->polled) && !spw_ring_outstanding(a)));
}

/*
 * A stall time after work landed on a ring whose consumer was not
 * waiting: if it still waits and the consumer has not come back, wake
 * every idle consumer; the first to enter takes it (spw_ring_steal_locked).
 * While any ring holds work the timer stays armed, stalled or not: a
 * consumer that goes idle later (in poll/epoll, not in enter) is woken by
 * a later run. Softirq; both loops are bounded by g->nr (at most
 * SPW_MAX_MEMBERS) once per stall period. The rings' accounting is read
 * without their locks: a ring that changes meanwhile is looked at again
 * by the next run, which its new work arms.
 */
static void spw_stall_timer(struct timer_list *t)
{
	struct spw_group *g = from_timer(g, t, stall_timer);
	bool stalled = false, recheck = false;
	struct spw_clock clock;
	unsigned int i;

	spin_lock_bh(&g->lock);
	spw_clock_now(g, &clock);
	for (i = 0; i < g->nr && g->placing; i++) {
		if (!spw_fifo_len(&g->rings[i]) || READ_ONCE(g->acct[i].waiting))
			continue;
		if (spw_ring_responsive(&g->acct[i], &clock))
			recheck = true;
		else
			stalled = true;
	}
	if (stalled) {
		WRITE_ONCE(g->stalled_work, true);
		WRITE_ONCE(g->steal_seq, g->steal_seq + 1);
		for (i = 0; i < g->nr; i++)
			if (spw_ring_idle(&g->acct[i]))
				spw_ring_wake(&g->rings[i]);
	}
	if ((recheck || stalled) && g->placing)
		mod_timer(&g->stall_timer, jiffies + g->stall + 1);
	spin_unlock_bh(&g->lock);
}

/* Lock two rings in index order (under group->lock, BHs off). */
static void spw_ring_lock_two(struct spw_ring *a, struct spw_ring *b)
	__acquires(&a->lock) __acquires(&b->lock)
{
	if (a->idx > b->idx)
		swap(a, b);
	spin_lock(&a->lock);
	spin_lock_nested(&b->lock, SINGLE_DEPTH_NESTING);
}

static void spw_ring_unlock_two(struct spw_ring *a, struct spw_ring *b)
	__releases(&a->lock) __releases(&b->lock)
{
	spin_unlock(&a->lock);
	spin_unlock(&b->lock);
}

/*
 * Move work from a stalled sibling to @r, whose consumer is here now and
 * has room: at most SPW_BATCH tokens, the enter that called us steals
 * again when it has posted them. Under group->lock, which serialises
 * steals and rehomes; the two rings' locks are taken here. Returns true
 * when tokens moved.
 */
bool spw_ring_steal_locked(struct spw_ring *r)
{
	struct spw_group *g = r->group;
	struct spw_ring_acct *a = &g->acct[r->idx], *va;
	unsigned int mask = g->entries - 1, room, n;
	struct spw_clock clock;
	struct spw_ring *v;
	int victim;

	lockdep_assert_held(&g->lock);
	/* the scan runs only once the stall timer has seen stalled work */
	if (!READ_ONCE(a->live) || !g->stalled_work)
		return false;
	spw_clock_now(g, &clock);
	victim = spw_pick_victim(g->acct, g->nr, r->idx, &clock);
	if (victim < 0) {
		/* nothing to take: no more scans until the timer finds some */
		WRITE_ONCE(g->stalled_work, false);
		return false;
	}
	v = &g->rings[victim];
	va = &g->acct[victim];
	spw_ring_lock_two(r, v);
	room = a->entries - spw_ring_outstanding(a);
	n = min3(room, spw_fifo_len(v), (unsigned int)SPW_BATCH);
	for (room = n; room; room--) {
		r->tokens[r->tok_tail & mask] = v->tokens[v->tok_head & mask];
		WRITE_ONCE(r->tok_tail, r->tok_tail + 1);
		WRITE_ONCE(v->tok_head, v->tok_head + 1);
	}
	WRITE_ONCE(va->pending, va->pending - n);
	WRITE_ONCE(a->pending, a->pending + n);
	g->members[victim].st.rehomed += n;
	if (v->hdr && !spw_fifo_len(v))
		spw_hdr_clear_flags(v->hdr, SPW_RING_F_WORK_PENDING);
	spw_sum_refile(&g->policy, g->acct, victim, &clock);
	spw_sum_refile(&g->policy, g->acct, r->idx, &clock);
	spw_ring_unlock_two(r, v);
	return n > 0;
}

/*
 * The ring the policy picks for a connection of member @m, or a drop.
 * Without a lock: the answer is re-checked under the ring's lock
 * (spw_ring_push()). BHs are off (softirq, or under a _bh lock).
 */
static int spw_pick(struct spw_group *g, struct spw_member *m)
{
	unsigned int home = m->idx;
	struct spw_clock clock;
	int cpu_home;

	spw_clock_now(g, &clock);
	/* a hint: which ring's consumer last ran on this CPU */
	if (g->cpu_ring) {
		cpu_home = READ_ONCE(g->cpu_ring[raw_smp_processor_id()]);
		if (cpu_home >= 0)
			home = cpu_home;
	}
	return spw_pick_ring(&g->policy, g->acct, m->idx, home, &clock);
}

/*
 * Put one token of member @origin on ring @t if it can take it now: the
 * policy decided without the ring's lock, this is the exact check.
 * Called with BHs off; takes only @t's lock.
 */
static bool spw_ring_push(struct spw_group *g, unsigned int t, u32 origin)
{
	struct spw_ring *r = &g->rings[t];
	struct spw_ring_acct *a = &g->acct[t];
	struct spw_clock clock;
	bool arm;

	spin_lock(&r->lock);
	if (!spw_ring_has_room(a)) {
		/* the decision read an old view: file the ring where it is */
		spw_refile(g, t);
		spin_unlock(&r->lock);
		return false;
	}
	spw_clock_now(g, &clock);
	/* work found the ring idle: a poll consumer's stall clock starts */
	if (!spw_ring_outstanding(a))
		WRITE_ONCE(a->work_since, clock.now);
	r->tokens[r->tok_tail & (g->entries - 1)] = origin;
	WRITE_ONCE(r->tok_tail, r->tok_tail + 1);
	WRITE_ONCE(a->pending, a->pending + 1);
	spw_sum_refile(&g->policy, g->acct, t, &clock);
	if (r->hdr)
		spw_hdr_set_flags(r->hdr, SPW_RING_F_WORK_PENDING);
	arm = !a->waiting && g->stall != SPW_STALL_NEVER;
	spin_unlock(&r->lock);
	/* enter sleepers and poll/epoll/io_uring waiters alike */
	spw_ring_wake(r);
	if (arm && !timer_pending(&g->stall_timer))
		mod_timer(&g->stall_timer, jiffies + g->stall + 1);
	return true;
}

/* One of @m's connections has no ring with room: the drop work resets it. */
static void spw_drop_locked(struct spw_group *g, struct spw_member *m)
{
	struct spw_ring *home = &g->rings[m->idx];

	lockdep_assert_held(&m->lock);
	/* counted as dropped when the work has really reset one */
	m->drop_pending++;
	spin_lock(&home->lock);
	if (home->hdr)
		spw_hdr_set_flags(home->hdr, SPW_RING_F_DROPPED);
	spin_unlock(&home->lock);
	if (!READ_ONCE(g->hold_drops))
		mod_delayed_work(system_unbound_wq, &g->drop_work, 0);
}

/*
 * Put one token of member @m on ring @t, or drop it (SPW_PICK_DROP). A
 * ring that cannot take it after all (it filled, closed or refused since
 * the decision) sends us back to the policy, at most twice, then to the
 * drop work, which looks at every ring again before it resets anything.
 */
static void spw_place_locked(struct spw_group *g, struct spw_member *m, int t)
{
	unsigned int tries;

	lockdep_assert_held(&m->lock);
	for (tries = 0; t != SPW_PICK_DROP; tries++) {
		if (spw_ring_push(g, t, m->idx))
			return;
		t = tries < 2 ? spw_pick(g, m) : SPW_PICK_DROP;
	}
	spw_drop_locked(g, m);
}

/*
 * Place every connection in @m's accept queue that has no token yet.
 * Counting against the queue length, rather than counting wake-ups,
 * heals the cases where TCP adds a child without waking the listener
 * and where a hand-over raced with an arrival. Each pass is one placement
 * (O(1) amortised, spw_pick_ring(), at most three tries); the loop runs
 * once per connection not yet placed, so the work per arrival is the same
 * however it is batched. Under @m's lock, which serialises its listener's
 * placements; nothing group-wide.
 */
void spw_reconcile_locked(struct spw_member *m)
{
	struct spw_group *g = m->group;
	u32 queued;

	lockdep_assert_held(&m->lock);
	if (!READ_ONCE(g->placing))
		return;
	queued = READ_ONCE(m->sock->sk->sk_ack_backlog);
	while (m->assigned < queued) {
		m->assigned++;
		m->st.arrived++;
		spw_place_locked(g, m, spw_pick(g, m));
	}
}

/*
 * One of @m's tokens is finished: its connection was handed over, reset,
 * or was not there any more. An arrival may have raced with that accept,
 * so re-place whatever the queue holds now; every @assigned decrement
 * goes through here.
 */
void spw_token_retire_locked(struct spw_member *m)
{
	lockdep_assert_held(&m->lock);
	m->assigned--;
	spw_reconcile_locked(m);
}

/*
 * Move up to SPW_BATCH of @r's waiting tokens to the rings the policy
 * picks; the policy never picks @r (it is closed, full or refusing). A
 * token no ring has room for is dropped, or with @keep stays on @r and
 * ends the batch (@r's consumer is still there, and the other rings are
 * full). Returns true while tokens remain to move. Under group->lock,
 * which keeps @r's head ours: steals take it too, and @r's consumer is
 * gone or is the caller (post_lock).
 */
static bool spw_ring_rehome_batch_locked(struct spw_ring *r, bool keep)
{
	struct spw_group *g = r->group;
	struct spw_ring_acct *a = &g->acct[r->idx];
	unsigned int mask = g->entries - 1, n;
	bool more = true;
	int t;

	lockdep_assert_held(&g->lock);
	for (n = 0; n < SPW_BATCH && more; n++) {
		struct spw_member *m;

		spin_lock(&r->lock);
		if (r->tok_head == r->tok_tail) {
			spin_unlock(&r->lock);
			return false;
		}
		m = &g->members[r->tokens[r->tok_head & mask]];
		spin_unlock(&r->lock);

		spin_lock(&m->lock);
		t = spw_pick(g, m);
		if (keep && (t == SPW_PICK_DROP || t == r->idx)) {
			spin_unlock(&m->lock);
			return false;
		}
		spin_lock(&r->lock);
		WRITE_ONCE(r->tok_head, r->tok_head + 1);
		WRITE_ONCE(a->pending, a->pending - 1);
		g->members[r->idx].st.rehomed++;
		spw_refile(g, r->idx);
		more = r->tok_head != r->tok_tail;
		if (r->hdr && !more)
			spw_hdr_clear_flags(r->hdr, SPW_RING_F_WORK_PENDING);
		spin_unlock(&r->lock);
		spw_place_locked(g, m, t);
		spin_unlock(&m->lock);
	}
	return more;
}

/*
 * @r's waiting connections move to its siblings: its consumer is gone,
 * corrupted its head, or (@keep) cannot take them now. Process context,
 * group->lock not held: it is taken once per SPW_BATCH tokens, so that a
 * full ring of SPW_MAX_RING_ENTRIES does not keep bottom halves off for
 * the whole move. Connections are not lost unless every other ring is
 * full, and then they are counted as drops (or, with @keep, wait on @r).
 */
void spw_ring_rehome(struct spw_ring *r, bool keep)
{
	struct spw_group *g = r->group;
	bool more;

	do {
		spin_lock_bh(&g->lock);
		more = spw_ring_rehome_batch_locked(r, keep);
		spin_unlock_bh(&g->lock);
		if (more)
			cond_resched();
	} while (more);
}

/* Called after a ring posted CQEs: mirror its counters for observers. */
void spw_ring_work_posted_locked(struct spw_ring *r)
{
	struct spw_member *m = &r->group->members[r->idx];
	struct spw_ring_hdr *hdr = r->hdr;

	lockdep_assert_held(&r->lock);
	if (r->tok_head == r->tok_tail)
		spw_hdr_clear_flags(hdr, SPW_RING_F_WORK_PENDING);
	WRITE_ONCE(hdr->delivered, m->st.delivered);
	WRITE_ONCE(hdr->spilled_in, m->st.spilled_in);
	/* the listener's side, without its lock: a mirror, not a balance */
	WRITE_ONCE(hdr->spilled_out, READ_ONCE(m->st.spilled_out));
	WRITE_ONCE(hdr->dropped, READ_ONCE(m->st.dropped));
}

/*
 * Our entry on a member's wait queue: called for every wake-up of the
 * listener (sock_def_readable() for a new child, state changes, close),
 * under the wait-queue lock with hard IRQs off, in softirq or process
 * context. It never sleeps and never stops the wake-up from reaching the
 * listener's other waiters (non-exclusive entry, returns 0).
 */
static int spw_member_wake(struct wait_queue_entry *wait, unsigned int mode,
			   int sync, void *key)
{
	struct spw_member *m = container_of(wait, struct spw_member, wait);
	__poll_t mask = key_to_poll(key);

	if (mask && !(mask & (EPOLLIN | EPOLLRDNORM)))
		return 0;
	/* hard IRQs are off here, so BHs cannot run: the plain lock is enough */
	spin_lock(&m->lock);
	spw_reconcile_locked(m);
	spin_unlock(&m->lock);
	return 0;
}

/*
 * A drop was decided without any ring's lock, on a view that may have
 * been old: before a client is reset, look at every ring (O(members), in
 * process context, under no lock; the shared memory it reads is RCU's)
 * and give the connection to one with room. Returns true when it did.
 */
static bool spw_drop_rescue(struct spw_group *g, struct spw_member *m)
{
	struct spw_clock clock;
	bool placed = false;
	int t;

	/* teardown: the drops decided are carried out, as they were decided */
	if (!READ_ONCE(g->placing))
		return false;
	spw_clock_now(g, &clock);
	rcu_read_lock();
	t = spw_pick_exact(g->acct, g->nr, m->idx, &clock);
	rcu_read_unlock();
	if (t < 0)
		return false;
	spin_lock_bh(&m->lock);
	if (m->drop_pending && spw_ring_push(g, t, m->idx)) {
		m->drop_pending--;
		placed = true;
	}
	spin_unlock_bh(&m->lock);
	return placed;
}

/*
 * Reset connections the policy could not place anywhere. Process context;
 * O(1) per drop, plus the rescue's look at every ring: kernel_accept()
 * takes the member's oldest waiting connection (the queue is singly
 * linked: removing the newest would walk it). Tokens name a listener, not
 * a connection, so which connection goes changes no count; see
 * docs/architecture.md. No lock is held across the accept; the counters
 * move in one locked step so they always balance.
 */
static void spw_drop_work(struct work_struct *work)
{
	struct spw_group *g = container_of(to_delayed_work(work),
					   struct spw_group, drop_work);
	bool retry = false;
	unsigned int i;

	for (i = 0; i < g->nr; i++) {
		struct spw_member *m = &g->members[i];
		unsigned int n;

		spin_lock_bh(&m->lock);
		n = m->drop_pending;
		spin_unlock_bh(&m->lock);

		while (n--) {
			struct socket *child = NULL;
			int err;

			if (spw_drop_rescue(g, m))
				continue;
			err = kernel_accept(m->sock, &child, O_NONBLOCK);
			/*
			 * -EAGAIN: someone accepted it; -EINVAL: the member
			 * stopped listening and its queue went with it. Any
			 * other error (memory, a security module) leaves the
			 * connection queued: try again later.
			 */
			if (err && err != -EAGAIN && err != -EINVAL) {
				retry = true;
				break;
			}
			spin_lock_bh(&m->lock);
			m->drop_pending--;
			if (err)
				m->st.stale++;
			else
				m->st.dropped++;
			spw_token_retire_locked(m);
			spin_unlock_bh(&m->lock);
			if (child) {
				/* linger 0: close sends RST, the client learns now */
				sock_no_linger(child->sk);
				sock_release(child);
			}
		}
	}
	/*
	 * Never once teardown has begun: flush_delayed_work() does not wait
	 * for a work that queues itself again while it is flushed, and the
	 * group would be freed with this timer armed. A drop left undone
	 * then leaves its connection in the listener's queue.
	 */
	spin_lock_bh(&g->lock);
	if (retry && g->placing)
		queue_delayed_work(system_unbound_wq, &g->drop_work, HZ / 10);
	spin_unlock_bh(&g->lock);
}

/*
 * Hook one listener: put our entry on its wait queue. lock_sock() keeps
 * it listening (listen()/shutdown() take it) while we look.
 */
static int spw_member_hook(struct spw_member *m)
{
	struct sock *sk = m->sock->sk;
	u32 slots = m->group->nr * m->group->entries;
	u32 somaxconn, backlog;
	int err;

	struct sockaddr_storage ss = {};

	err = spw_registry_add(m);
	if (err)
		return err;
	/* the address CQEs served by this member's ring name (locks @sk) */
	if (kernel_getsockname(m->sock, (struct sockaddr *)&ss) < 0)
		ss.ss_family = AF_UNSPEC;
	spw_addr_fill(&m->bound, &ss);
	lock_sock(sk);
	if (sk->sk_state != TCP_LISTEN) {
		release_sock(sk);
		return -EINVAL;
	}
	/*
	 * Every token may name this listener (all traffic on one member), so
	 * its accept queue should hold every ring's worth: TCP's backlog
	 * should not be what refuses a connection while a ring has room. But
	 * sk_max_ack_backlog also bounds the SYN queue, where SYN cookies
	 * start: we raise it no further than the owner could with listen(),
	 * net.core.somaxconn, and never lower it.
	 */
	backlog = READ_ONCE(sk->sk_max_ack_backlog);
	somaxconn = READ_ONCE(sock_net(sk)->core.sysctl_somaxconn);
	m->saved_backlog = backlog;
	if (backlog < somaxconn) {
		m->raised_backlog = min_t(u64, (u64)backlog + slots, somaxconn);
		WRITE_ONCE(sk->sk_max_ack_backlog, m->raised_backlog);
	}
	add_wait_queue(&m->sock->wq.wait, &m->wait);
	m->hooked = true;
	release_sock(sk);
	return 0;
}

static void spw_member_unhook(struct spw_member *m)
{
	struct sock *sk = m->sock->sk;

	if (m->hooked) {
		/* takes the wait-queue lock: a running spw_member_wake() is done */
		remove_wait_queue(&m->sock->wq.wait, &m->wait);
		lock_sock(sk);
		/* a listen() by the owner since we raised it wins */
		if (m->raised_backlog &&
		    READ_ONCE(sk->sk_max_ack_backlog) == m->raised_backlog)
			WRITE_ONCE(sk->sk_max_ack_backlog, m->saved_backlog);
		release_sock(sk);
		m->hooked = false;
	}
	spw_registry_del(m);
}

static void spw_group_free(struct spw_group *g)
{
	unsigned int i;

	/* g->nr is set only once every array exists */
	for (i = 0; i < g->nr; i++) {
		spw_ring_free(&g->rings[i]);
		if (g->members[i].sock)
			sockfd_put(g->members[i].sock);
	}
	kvfree(g->rings);
	kvfree(g->members);
	kvfree(g->acct);
	kvfree(g->policy_mem);
	kvfree(g->cpu_ring);
	kfree(g);
	atomic_dec(&spw_live_groups);
}

/*
 * Undo registration: listeners go back to plain accept() behaviour, and
 * their waiters, woken all along, serve what is queued. Drops already
 * decided are carried out (those clients get RST) unless the group never
 * served (@published false: a failed create disturbs no client).
 */
static void spw_group_destroy(struct spw_group *g, bool published)
{
	unsigned int i;

	spin_lock_bh(&g->lock);
	WRITE_ONCE(g->placing, false);
	spin_unlock_bh(&g->lock);

	for (i = 0; i < g->nr; i++)
		spw_member_unhook(&g->members[i]);
	/*
	 * No wake function runs now, so nothing queues the drop work or arms
	 * the stall timer, and neither re-arms itself once @placing is false.
	 * The flush carries out the drops already decided (one attempt each);
	 * the cancel waits for any run the flush did not.
	 */
	if (published)
		flush_delayed_work(&g->drop_work);
	cancel_delayed_work_sync(&g->drop_work);
	del_timer_sync(&g->stall_timer);
	spw_group_free(g);
}

void spw_group_put(struct spw_group *g)
{
	if (refcount_dec_and_test(&g->ref))
		spw_group_destroy(g, true);
}

static struct spw_group *spw_group_alloc(unsigned int nr,
					 const struct spw_group_create *args)
{
	unsigned int kind = args->policy ?: SPW_POLICY_P2C;
	struct spw_clock clock;
	struct spw_group *g;
	unsigned int i;

	g = kzalloc(sizeof(*g), GFP_KERNEL_ACCOUNT);
	if (!g)
		return NULL;
	atomic_inc(&spw_live_groups);
	g->id = atomic64_inc_return(&spw_next_group_id);
	spin_lock_init(&g->lock);
	mutex_init(&g->open_lock);
	refcount_set(&g->ref, 1);
	INIT_DELAYED_WORK(&g->drop_work, spw_drop_work);
	timer_setup(&g->stall_timer, spw_stall_timer, 0);
	g->entries = args->ring_entries;
	g->hold_drops = true;
	g->share_listeners = args->flags & SPW_GROUP_F_SHARE_LISTENERS;
	g->stall_ms = args->stall_ms ?: SPW_DEFAULT_STALL_MS;
	if (args->stall_ms == SPW_STALL_OFF)
		g->stall = SPW_STALL_NEVER;
	else
		g->stall = max(1UL, msecs_to_jiffies(g->stall_ms));
	g->acct = kvcalloc(nr, sizeof(*g->acct), GFP_KERNEL_ACCOUNT);
	g->members = kvcalloc(nr, sizeof(*g->members), GFP_KERNEL_ACCOUNT);
	g->rings = kvcalloc(nr, sizeof(*g->rings), GFP_KERNEL_ACCOUNT);
	g->policy_mem = kvzalloc(spw_policy_mem_size(nr), GFP_KERNEL_ACCOUNT);
	if (kind == SPW_POLICY_CPU) {
		g->cpu_ring = kvmalloc_array(nr_cpu_ids, sizeof(*g->cpu_ring),
					     GFP_KERNEL_ACCOUNT);
		if (g->cpu_ring)
			for (i = 0; i < nr_cpu_ids; i++)
				g->cpu_ring[i] = -1;
	}
	if (!g->acct || !g->members || !g->rings || !g->policy_mem ||
	    (kind == SPW_POLICY_CPU && !g->cpu_ring))
		goto err_free;
	spw_policy_init(&g->policy, g->policy_mem, nr, kind, args->spill_at,
			g->entries, get_random_u32());
	/* from here spw_group_free() walks the arrays */
	g->nr = nr;
	for (i = 0; i < nr; i++) {
		spin_lock_init(&g->members[i].lock);
		g->members[i].group = g;
		g->members[i].idx = i;
		init_waitqueue_func_entry(&g->members[i].wait, spw_member_wake);
		if (spw_ring_init(&g->rings[i], g, i))
			goto err_free;
	}
	/* nobody else sees @g yet: no lock needed to file the rings */
	spw_clock_now(g, &clock);
	for (i = 0; i < nr; i++)
		spw_sum_refile(&g->policy, g->acct, i, &clock);
	return g;

err_free:
	spw_group_free(g);
	return NULL;
}

/*
 * Registering rewires how the socket's connections are served: only its
 * owner may, or an admin of its network namespace. Holding the fd (say,
 * received over SCM_RIGHTS, or a group fd) is not enough.
 */
static bool spw_may_register(struct socket *sock)
{
	return uid_eq(sock->file->f_cred->euid, current_euid()) ||
	       ns_capable(sock_net(sock->sk)->user_ns, CAP_NET_ADMIN);
}

/*
 * May the caller make @sock a member? A TCP listener of this network
 * namespace, and the caller's own.
 */
static int spw_member_vet(struct socket *sock)
{
	struct sock *sk = sock->sk;

	if (!sk || sk->sk_type != SOCK_STREAM || sk->sk_protocol != IPPROTO_TCP ||
	    (sk->sk_family != AF_INET && sk->sk_family != AF_INET6))
		return -EOPNOTSUPP;
	if (!net_eq(sock_net(sk), current->nsproxy->net_ns))
		return -EXDEV;
	if (!spw_may_register(sock))
		return -EPERM;
	if (READ_ONCE(sk->sk_state) != TCP_LISTEN)
		return -EINVAL;
	return 0;
}

/* Look up and vet one member socket; the reference is kept on success. */
static int spw_member_attach(struct spw_group *g, unsigned int idx, int fd)
{
	struct socket *sock;
	unsigned int i;
	int err;

	sock = sockfd_lookup(fd, &err);
	if (!sock)
		return err;		/* -EBADF or -ENOTSOCK */
	err = spw_member_vet(sock);
	if (err)
		goto err_put;
	err = -EINVAL;
	for (i = 0; i < idx; i++)
		if (g->members[i].sock == sock)
			goto err_put;	/* duplicate member */
	g->members[idx].sock = sock;
	return 0;

err_put:
	sockfd_put(sock);
	return err;
}

/* GROUP_CREATE's parameters, for @nr members. */
static int spw_params_check(const struct spw_group_create *args, u32 nr)
{
	unsigned int i;

	if (args->flags & ~SPW_GROUP_F_ALL)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(args->resv); i++)
		if (args->resv[i])
			return -EINVAL;
	if (!nr)
		return -EINVAL;
	if (nr > SPW_MAX_MEMBERS)
		return -E2BIG;
	if (!is_power_of_2(args->ring_entries) ||
	    args->ring_entries > SPW_MAX_RING_ENTRIES)
		return -EINVAL;
	if (nr * args->ring_entries > SPW_MAX_GROUP_SLOTS)
		return -E2BIG;
	if (args->stall_ms != SPW_STALL_OFF && args->stall_ms > 3600 * MSEC_PER_SEC)
		return -EINVAL;
	if (args->policy > SPW_POLICY_MAX || args->spill_at > args->ring_entries)
		return -EINVAL;
	return 0;
}

/*
 * Every member is attached: hook them, start placing and return the group
 * fd; or undo everything, disturbing no client. Consumes @g.
 */
static long spw_group_publish(struct spw_group *g, u32 flags)
{
	unsigned int i;
	int fd, err;

	for (i = 0; i < g->nr; i++) {
		err = spw_member_hook(&g->members[i]);
		if (err)
			goto err_group;
	}

	/*
	 * Place what queued before we hooked, and start placing. Decided
	 * drops wait (hold_drops) until the fd exists: a failed create
	 * resets nobody. Our own reference keeps @g while another thread may
	 * already close the new fd.
	 */
	refcount_inc(&g->ref);
	spin_lock_bh(&g->lock);
	WRITE_ONCE(g->placing, true);
	spin_unlock_bh(&g->lock);
	for (i = 0; i < g->nr; i++) {
		struct spw_member *m = &g->members[i];

		spin_lock_bh(&m->lock);
		spw_reconcile_locked(m);
		spin_unlock_bh(&m->lock);
	}

	fd = spw_anon_fd("[spillway-group]", &spw_group_fops, g,
			 O_RDWR | (flags & SPW_GROUP_F_CLOEXEC ? O_CLOEXEC : 0));
	if (fd < 0) {
		err = fd;
		refcount_dec(&g->ref);
		goto err_group;
	}
	spin_lock_bh(&g->lock);
	WRITE_ONCE(g->hold_drops, false);
	spin_unlock_bh(&g->lock);
	/* carry out what was held; the work finds nothing if none was */
	mod_delayed_work(system_unbound_wq, &g->drop_work, 0);
	spw_group_put(g);
	return fd;

err_group:
	spw_group_destroy(g, false);
	return err;
}

long spw_group_create(struct spw_group_create __user *uarg)
{
	struct spw_group_create args;
	struct spw_group *g;
	unsigned int i;
	s32 *fds;
	int err;

	if (copy_from_user(&args, uarg, sizeof(args)))
		return -EFAULT;
	err = spw_params_check(&args, args.nr_fds);
	if (err)
		return err;

	fds = kvmalloc_array(args.nr_fds, sizeof(*fds), GFP_KERNEL);
	if (!fds)
		return -ENOMEM;
	if (copy_from_user(fds, u64_to_user_ptr(args.fds),
			   array_size(args.nr_fds, sizeof(*fds)))) {
		err = -EFAULT;
		goto out;
	}
	g = spw_group_alloc(args.nr_fds, &args);
	if (!g) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < g->nr; i++) {
		err = spw_member_attach(g, i, fds[i]);
		if (err) {
			spw_group_destroy(g, false);
			goto out;
		}
	}
	err = spw_group_publish(g, args.flags);
out:
	kvfree(fds);
	return err;
}

/*
 * A new fd for a member's listener, for a holder of the group fd that
 * could have registered it (spw_may_register()): holding the group fd
 * alone must not hand out the socket (shutdown(), a reuseport BPF program
 * that steers the whole port, accept()). Only a group that owns its
 * listeners hands them out; a creator that kept its fds needs none.
 */
static long spw_member_listener(struct spw_group *g,
				struct spw_member_listener __user *uarg)
{
	struct spw_member_listener args;
	struct socket *sock;
	int fd;

	if (copy_from_user(&args, uarg, sizeof(args)))
		return -EFAULT;
	if (args.flags & ~SPW_RING_OPEN_F_ALL || args.member >= g->nr)
		return -EINVAL;
	if (!g->share_listeners)
		return -EOPNOTSUPP;
	sock = g->members[args.member].sock;
	if (!spw_may_register(sock))
		return -EPERM;
	fd = get_unused_fd_flags(args.flags & SPW_RING_OPEN_F_CLOEXEC ? O_CLOEXEC : 0);
	if (fd < 0)
		return fd;
	fd_install(fd, get_file(sock->file));
	return fd;
}

/* What the counters say at one moment: the per-member rows and totals. */
struct spw_snapshot {
	struct spw_member_stats *ms;	/* [g->nr] */
	u32 *waiting, *polled;		/* [g->nr], for fdinfo */
	u64 stale, dropping;
};

/*
 * Copy every member's counters, each member and ring under its own locks,
 * all in one hold of group->lock (no token moves between rings meanwhile):
 * the totals balance when nothing arrives or is handed over (struct
 * spw_group_stats). One O(members) copy, at most SPW_MAX_MEMBERS rows;
 * formatting and copying out happen after it.
 */
static int spw_snapshot_take(struct spw_group *g, struct spw_snapshot *sn)
{
	unsigned int i;

	sn->ms = kvcalloc(g->nr, sizeof(*sn->ms), GFP_KERNEL);
	sn->waiting = kvcalloc(g->nr, sizeof(u32), GFP_KERNEL);
	sn->polled = kvcalloc(g->nr, sizeof(u32), GFP_KERNEL);
	if (!sn->ms || !sn->waiting || !sn->polled)
		return -ENOMEM;
	sn->dropping = 0;
	sn->stale = 0;
	spin_lock_bh(&g->lock);
	for (i = 0; i < g->nr; i++) {
		struct spw_member *m = &g->members[i];
		const struct spw_counters *c = &m->st;
		const struct spw_ring_acct *a = &g->acct[i];
		struct spw_member_stats *ms = &sn->ms[i];

		spin_lock(&m->lock);
		spin_lock(&g->rings[i].lock);
		ms->arrived = c->arrived;
		ms->delivered = c->delivered;
		ms->spilled_out = c->spilled_out;
		ms->spilled_in = c->spilled_in;
		ms->dropped = c->dropped;
		ms->rehomed = c->rehomed;
		ms->pending = a->pending;
		ms->outstanding = spw_ring_outstanding(a);
		ms->ring_entries = a->entries;
		ms->state = g->rings[i].state;
		sn->waiting[i] = a->waiting;
		sn->polled[i] = a->polled;
		sn->dropping += m->drop_pending;
		sn->stale += c->stale;
		spin_unlock(&g->rings[i].lock);
		spin_unlock(&m->lock);
	}
	spin_unlock_bh(&g->lock);
	return 0;
}

static void spw_snapshot_free(struct spw_snapshot *sn)
{
	kvfree(sn->ms);
	kvfree(sn->waiting);
	kvfree(sn->polled);
}

long spw_group_stats(struct spw_group *g, struct spw_group_stats __user *uarg)
{
	struct spw_member_stats tot = {};
	struct spw_group_stats args;
	struct spw_snapshot sn = {};
	unsigned int i, n;
	long ret;

	if (copy_from_user(&args, uarg, sizeof(args)))
		return -EFAULT;
	if (args.resv)
		return -EINVAL;
	n = min(args.nr, g->nr);
	ret = spw_snapshot_take(g, &sn);
	if (ret)
		goto out;

	for (i = 0; i < g->nr; i++) {
		tot.arrived += sn.ms[i].arrived;
		tot.delivered += sn.ms[i].delivered;
		tot.spilled_out += sn.ms[i].spilled_out;
		tot.spilled_in += sn.ms[i].spilled_in;
		tot.dropped += sn.ms[i].dropped;
		tot.rehomed += sn.ms[i].rehomed;
		tot.pending += sn.ms[i].pending;
		tot.outstanding += sn.ms[i].outstanding;
		tot.ring_entries += sn.ms[i].ring_entries;
	}
	ret = g->nr;
	if (n && copy_to_user(u64_to_user_ptr(args.members), sn.ms,
			      array_size(n, sizeof(*sn.ms))))
		ret = -EFAULT;
	else if (copy_to_user(&uarg->total, &tot, sizeof(tot)) ||
		 put_user(sn.stale, &uarg->stale) ||
		 put_user(sn.dropping, &uarg->dropping) ||
		 clear_user(uarg->resv2, sizeof(uarg->resv2)))
		ret = -EFAULT;
out:
	spw_snapshot_free(&sn);
	return ret;
}

static long spw_group_ioctl(struct file *file, unsigned int cmd,
			    unsigned long arg)
{
	struct spw_group *g = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case SPW_IOC_RING_OPEN:
		return spw_ring_open(g, uarg);
	case SPW_IOC_GROUP_STATS:
		return spw_group_stats(g, uarg);
	case SPW_IOC_MEMBER_LISTENER:
		return spw_member_listener(g, uarg);
	default:
		return -ENOTTY;
	}
}

static int spw_group_release(struct inode *inode, struct file *file)
{
	spw_group_put(file->private_data);
	return 0;
}

static const char *spw_policy_name(unsigned int kind)
{
	switch (kind) {
	case SPW_POLICY_ORIGIN:
		return "origin";
	case SPW_POLICY_LEAST:
		return "least";
	case SPW_POLICY_P2C:
		return "p2c";
	case SPW_POLICY_CPU:
		return "cpu";
	default:
		return "?";
	}
}

/*
 * /proc/PID/fdinfo/FD of a group fd: one line per member, for operators
 * (any reader the fd's owner lets read its fdinfo): printed from a
 * snapshot, not under the group lock.
 */
static void spw_group_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct spw_group *g = file->private_data;
	struct spw_snapshot sn = {};
	unsigned int i;

	seq_printf(m, "spw-group-id:\t%llu\nspw-members:\t%u\nspw-ring-entries:\t%u\n",
		   g->id, g->nr, g->entries);
	seq_printf(m, "spw-policy:\t%s\nspw-spill-at:\t%u\nspw-stall-ms:\t%d\n",
		   spw_policy_name(g->policy.kind), g->policy.spill_at,
		   g->stall == SPW_STALL_NEVER ? -1 : (int)g->stall_ms);
	if (spw_snapshot_take(g, &sn))
		goto out;
	seq_printf(m, "spw-stale:\t%llu\nspw-dropping:\t%llu\n", sn.stale, sn.dropping);
	for (i = 0; i < g->nr; i++) {
		const struct spw_member_stats *ms = &sn.ms[i];

		seq_printf(m,
			   "spw-member-%u:\tstate=%u arrived=%llu delivered=%llu spilled_out=%llu spilled_in=%llu dropped=%llu rehomed=%llu outstanding=%u pending=%u waiting=%u polled=%u\n",
			   i, ms->state, ms->arrived, ms->delivered,
			   ms->spilled_out, ms->spilled_in, ms->dropped, ms->rehomed,
			   ms->outstanding, ms->pending, sn.waiting[i], sn.polled[i]);
	}
out:
	spw_snapshot_free(&sn);
}

static const struct file_operations spw_group_fops = {
	.owner		= THIS_MODULE,
	.release	= spw_group_release,
	.unlocked_ioctl	= spw_group_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.show_fdinfo	= spw_group_show_fdinfo,
};
