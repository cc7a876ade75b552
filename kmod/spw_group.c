// SPDX-License-Identifier: GPL-2.0
/*
 * spw_group.c - accept groups: registration, the arrival hook, placement
 * of connections on rings, drops, teardown and counters.
 *
 * Data path (token model): when a child socket joins member L's accept
 * queue, TCP calls L's sk_data_ready, which we own. We place "one
 * connection from L" as a token on a ring chosen by spw_pick_ring(); the
 * connection itself stays in L's accept queue. The ring's consumer later
 * calls kernel_accept() on L in its own context (spw_ring.c). A token for
 * which no ring has room becomes a drop: a work item accepts one
 * connection from L and resets it.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/nsproxy.h>
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

static bool spw_placing(const struct spw_group *g)
{
	lockdep_assert_held(&g->lock);
	return !g->dying;
}

static void spw_ring_wake(struct spw_ring *r)
{
	if (wq_has_sleeper(&r->wq))
		wake_up_interruptible_poll(&r->wq, EPOLLIN | EPOLLRDNORM);
}

void spw_clock_now(const struct spw_group *g, struct spw_clock *c)
{
	c->now = (unsigned int)jiffies;
	c->stall = g->stall;
}

static unsigned int spw_fifo_len(const struct spw_ring *r)
{
	return r->tok_tail - r->tok_head;
}

/*
 * A stall time after work landed on a ring whose consumer was not
 * waiting: if it still waits and the consumer has not come back, wake
 * every idle consumer; the first to enter takes it (spw_ring_steal_locked).
 */
static void spw_stall_timer(struct timer_list *t)
{
	struct spw_group *g = from_timer(g, t, stall_timer);
	bool stalled = false, recheck = false;
	struct spw_clock clock;
	unsigned int i;

	spin_lock_bh(&g->lock);
	spw_clock_now(g, &clock);
	for (i = 0; i < g->nr && !g->dying; i++) {
		if (!spw_fifo_len(&g->rings[i]) || g->acct[i].waiting)
			continue;
		if (spw_ring_responsive(&g->acct[i], &clock))
			recheck = true;
		else
			stalled = true;
	}
	if (stalled) {
		g->steal_seq++;
		for (i = 0; i < g->nr; i++)
			if (g->acct[i].waiting)
				spw_ring_wake(&g->rings[i]);
	}
	if (recheck && !g->dying)
		mod_timer(&g->stall_timer, jiffies + g->stall + 1);
	spin_unlock_bh(&g->lock);
}

/*
 * Move work from a stalled sibling to @r, whose consumer is here now and
 * has room. Returns true when tokens moved.
 */
bool spw_ring_steal_locked(struct spw_ring *r)
{
	struct spw_group *g = r->group;
	struct spw_ring_acct *a = &g->acct[r->idx];
	unsigned int mask = g->entries - 1, room, n;
	struct spw_clock clock;
	struct spw_ring *v;
	int victim;

	lockdep_assert_held(&g->lock);
	if (!a->live)
		return false;
	room = a->entries - spw_ring_outstanding(a);
	spw_clock_now(g, &clock);
	victim = room ? spw_pick_victim(g->acct, g->nr, r->idx, &clock) : -1;
	if (victim < 0)
		return false;
	v = &g->rings[victim];
	n = min(room, spw_fifo_len(v));
	for (room = n; room; room--) {
		r->tokens[r->tok_tail++ & mask] = v->tokens[v->tok_head++ & mask];
		g->acct[victim].pending--;
		a->pending++;
		g->members[victim].st.rehomed++;
	}
	return n > 0;
}

/* Put one token of member @m on the ring the policy picks, or drop it. */
static void spw_route_locked(struct spw_group *g, struct spw_member *m)
{
	struct spw_clock clock;
	struct spw_ring *r;
	int t;

	lockdep_assert_held(&g->lock);
	spw_clock_now(g, &clock);
	t = spw_pick_ring(g->acct, g->nr, m->idx, g->cursor, &clock);
	if (t == SPW_PICK_DROP) {
		m->drop_pending++;
		m->st.dropped++;
		if (g->rings[m->idx].hdr)
			g->rings[m->idx].hdr->flags |= SPW_RING_F_DROPPED;
		queue_work(system_unbound_wq, &g->drop_work);
		return;
	}
	r = &g->rings[t];
	r->tokens[r->tok_tail++ & (g->entries - 1)] = m->idx;
	g->acct[t].pending++;
	/* ties among siblings rotate rather than pile on one */
	if (t != m->idx)
		g->cursor = t + 1;
	if (r->hdr)
		r->hdr->flags |= SPW_RING_F_WORK_PENDING;
	/* enter sleepers and poll/epoll/io_uring waiters alike */
	spw_ring_wake(r);
	if (!g->acct[t].waiting && g->stall != SPW_STALL_NEVER &&
	    !timer_pending(&g->stall_timer))
		mod_timer(&g->stall_timer, jiffies + g->stall + 1);
}

/*
 * Place every connection in @m's accept queue that has no token yet.
 * Counting against the queue length, rather than counting callbacks,
 * heals the cases where TCP adds a child without calling sk_data_ready
 * and where a hand-over raced with an arrival.
 */
void spw_reconcile_locked(struct spw_member *m)
{
	struct spw_group *g = m->group;
	u32 queued;

	if (!spw_placing(g))
		return;
	queued = READ_ONCE(m->sock->sk->sk_ack_backlog);
	while (m->assigned < queued) {
		m->assigned++;
		m->st.arrived++;
		spw_route_locked(g, m);
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
	lockdep_assert_held(&m->group->lock);
	m->assigned--;
	spw_reconcile_locked(m);
}

/*
 * The ring's consumer is gone (or corrupted its head): move every token
 * it has not taken to the siblings. Connections are not lost unless every
 * other ring is full, and then they are counted as drops.
 */
void spw_ring_rehome_locked(struct spw_ring *r)
{
	struct spw_group *g = r->group;
	unsigned int mask = g->entries - 1;

	lockdep_assert_held(&g->lock);
	while (r->tok_head != r->tok_tail) {
		u32 origin = r->tokens[r->tok_head++ & mask];

		g->acct[r->idx].pending--;
		g->members[r->idx].st.rehomed++;
		spw_route_locked(g, &g->members[origin]);
	}
	if (r->hdr)
		r->hdr->flags &= ~SPW_RING_F_WORK_PENDING;
}

/* Called after a ring posted CQEs: mirror its counters for observers. */
void spw_ring_work_posted_locked(struct spw_ring *r)
{
	struct spw_member *m = &r->group->members[r->idx];
	struct spw_ring_hdr *hdr = r->hdr;

	lockdep_assert_held(&r->group->lock);
	if (r->tok_head == r->tok_tail)
		hdr->flags &= ~SPW_RING_F_WORK_PENDING;
	WRITE_ONCE(hdr->delivered, m->st.delivered);
	WRITE_ONCE(hdr->spilled_in, m->st.spilled_in);
	WRITE_ONCE(hdr->spilled_out, m->st.spilled_out);
	WRITE_ONCE(hdr->dropped, m->st.dropped);
}

/* A listener's accept queue grew; listeners only, children pass through. */
static void spw_data_ready(struct sock *sk)
{
	struct spw_member *m;

	rcu_read_lock();
	m = rcu_dereference_sk_user_data(sk);
	if (likely(m && sk->sk_state == TCP_LISTEN)) {
		spin_lock_bh(&m->group->lock);
		spw_reconcile_locked(m);
		spin_unlock_bh(&m->group->lock);
	} else {
		/*
		 * A child not yet accepted inherits the listener's callbacks
		 * (sk_clone_lock copies them; NOCOPY keeps sk_user_data out).
		 */
		spw_default_data_ready(sk);
	}
	rcu_read_unlock();
}

/* Give an accepted child the default callback it would have had. */
void spw_child_fixup(struct sock *sk)
{
	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_data_ready == spw_data_ready)
		sk->sk_data_ready = spw_default_data_ready;
	write_unlock_bh(&sk->sk_callback_lock);
}

/*
 * Reset the newest connection in @m's accept queue: the one that found
 * every ring full. kernel_accept() would take the oldest, which a ring
 * token is already waiting for. This is reqsk_queue_remove() from the
 * tail, then the graft inet_accept() does, under the same locks.
 */
static int spw_drop_newest(struct spw_member *m)
{
	struct sock *lsk = m->sock->sk;
	struct request_sock_queue *q = &inet_csk(lsk)->icsk_accept_queue;
	struct request_sock *req, *prev = NULL;
	struct socket *newsock;
	struct sock *child;
	int err;

	err = sock_create_lite(lsk->sk_family, lsk->sk_type, lsk->sk_protocol,
			       &newsock);
	if (err)
		return err;
	lock_sock(lsk);
	spin_lock_bh(&q->rskq_lock);
	req = lsk->sk_state == TCP_LISTEN ? q->rskq_accept_head : NULL;
	while (req && req->dl_next) {
		prev = req;
		req = req->dl_next;
	}
	/* a Fast Open child still needs its request: leave it to accept() */
	if (req && tcp_rsk(req)->tfo_listener)
		req = NULL;
	if (req) {
		if (prev)
			prev->dl_next = NULL;
		else
			WRITE_ONCE(q->rskq_accept_head, NULL);
		q->rskq_accept_tail = prev;
		sk_acceptq_removed(lsk);
	}
	spin_unlock_bh(&q->rskq_lock);
	release_sock(lsk);

	if (!req) {
		sock_release(newsock);
		err = kernel_accept(m->sock, &newsock, O_NONBLOCK);
		if (err)
			return err;
	} else {
		child = req->sk;
		reqsk_put(req);
		newsock->ops = m->sock->ops;
		lock_sock(child);
		sock_graft(child, newsock);
		newsock->state = SS_CONNECTED;
		release_sock(child);
	}
	spw_child_fixup(newsock->sk);
	/* linger 0: close sends RST, the client learns now, not at a timeout */
	sock_no_linger(newsock->sk);
	sock_release(newsock);
	return 0;
}

/* Reset connections the policy could not place anywhere. */
static void spw_drop_work(struct work_struct *work)
{
	struct spw_group *g = container_of(work, struct spw_group, drop_work);
	unsigned int i;

	for (i = 0; i < g->nr; i++) {
		struct spw_member *m = &g->members[i];
		unsigned int n;

		spin_lock_bh(&g->lock);
		n = m->drop_pending;
		spin_unlock_bh(&g->lock);

		while (n--) {
			int err = spw_drop_newest(m);

			spin_lock_bh(&g->lock);
			m->drop_pending--;
			if (err)
				g->stale++;
			spw_token_retire_locked(m);
			spin_unlock_bh(&g->lock);
		}
	}
}

/* Hook one listener; lock_sock() keeps it listening while we look. */
static int spw_member_hook(struct spw_member *m)
{
	struct sock *sk = m->sock->sk;
	u32 slots = m->group->nr * m->group->entries;
	int err = 0;

	lock_sock(sk);
	if (sk->sk_state != TCP_LISTEN) {
		err = -EINVAL;
		goto out_release;
	}
	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_user_data || sk->sk_data_ready != spw_default_data_ready) {
		err = -EBUSY;
		goto out_unlock;
	}
	/*
	 * Every token may name this listener (all traffic on one member), so
	 * its accept queue must hold every ring's worth: TCP's backlog must
	 * never be what refuses a connection while a ring has room.
	 */
	m->saved_backlog = READ_ONCE(sk->sk_max_ack_backlog);
	if (m->saved_backlog <= U32_MAX - slots)
		WRITE_ONCE(sk->sk_max_ack_backlog, m->saved_backlog + slots);
	__rcu_assign_sk_user_data_with_flags(sk, m, SK_USER_DATA_NOCOPY);
	sk->sk_data_ready = spw_data_ready;
	m->hooked = true;
out_unlock:
	write_unlock_bh(&sk->sk_callback_lock);
out_release:
	release_sock(sk);
	return err;
}

static void spw_member_unhook(struct spw_member *m)
{
	struct sock *sk = m->sock->sk;

	if (!m->hooked)
		return;
	/* lock_sock() waits out backlog processing that calls data_ready */
	lock_sock(sk);
	write_lock_bh(&sk->sk_callback_lock);
	sk->sk_data_ready = spw_default_data_ready;
	rcu_assign_sk_user_data(sk, NULL);
	WRITE_ONCE(sk->sk_max_ack_backlog, m->saved_backlog);
	write_unlock_bh(&sk->sk_callback_lock);
	release_sock(sk);
}

/*
 * After the grace period no new child can copy our callback; fix the
 * children already queued so none points into this module once it is
 * gone.
 */
static void spw_member_fixup_queue(struct spw_member *m)
{
	struct request_sock_queue *q;
	struct request_sock *req;

	if (!m->hooked)
		return;
	q = &inet_csk(m->sock->sk)->icsk_accept_queue;
	spin_lock_bh(&q->rskq_lock);
	for (req = q->rskq_accept_head; req; req = req->dl_next)
		if (req->sk)
			spw_child_fixup(req->sk);
	spin_unlock_bh(&q->rskq_lock);
	m->hooked = false;
}

static void spw_group_free(struct spw_group *g)
{
	unsigned int i;

	for (i = 0; i < g->nr; i++) {
		spw_ring_free(&g->rings[i]);
		if (g->members[i].sock)
			sockfd_put(g->members[i].sock);
	}
	kvfree(g->rings);
	kvfree(g->members);
	kvfree(g->acct);
	kfree(g);
	atomic_dec(&spw_live_groups);
}

/* Undo registration: listeners go back to plain accept() behaviour. */
static void spw_group_destroy(struct spw_group *g)
{
	unsigned int i;

	spin_lock_bh(&g->lock);
	g->dying = true;
	spin_unlock_bh(&g->lock);

	for (i = 0; i < g->nr; i++)
		spw_member_unhook(&g->members[i]);
	synchronize_net();
	for (i = 0; i < g->nr; i++)
		spw_member_fixup_queue(&g->members[i]);
	/* drops already decided are carried out: those clients get RST */
	flush_work(&g->drop_work);
	del_timer_sync(&g->stall_timer);
	spw_group_free(g);
}

void spw_group_put(struct spw_group *g)
{
	if (refcount_dec_and_test(&g->ref))
		spw_group_destroy(g);
}

static struct spw_group *spw_group_alloc(unsigned int nr, unsigned int entries,
					 unsigned int stall_ms)
{
	struct spw_group *g;
	unsigned int i;

	g = kzalloc(sizeof(*g), GFP_KERNEL_ACCOUNT);
	if (!g)
		return NULL;
	atomic_inc(&spw_live_groups);
	spin_lock_init(&g->lock);
	mutex_init(&g->open_lock);
	refcount_set(&g->ref, 1);
	INIT_WORK(&g->drop_work, spw_drop_work);
	timer_setup(&g->stall_timer, spw_stall_timer, 0);
	g->nr = nr;
	g->entries = entries;
	if (stall_ms == SPW_STALL_OFF)
		g->stall = SPW_STALL_NEVER;
	else
		g->stall = max(1UL, msecs_to_jiffies(stall_ms ?: SPW_DEFAULT_STALL_MS));
	g->acct = kvcalloc(nr, sizeof(*g->acct), GFP_KERNEL_ACCOUNT);
	g->members = kvcalloc(nr, sizeof(*g->members), GFP_KERNEL_ACCOUNT);
	g->rings = kvcalloc(nr, sizeof(*g->rings), GFP_KERNEL_ACCOUNT);
	if (!g->acct || !g->members || !g->rings)
		goto err_free;
	for (i = 0; i < nr; i++) {
		g->members[i].group = g;
		g->members[i].idx = i;
		if (spw_ring_init(&g->rings[i], g, i))
			goto err_free;
	}
	return g;

err_free:
	spw_group_free(g);
	return NULL;
}

/* Look up and vet one member socket; the reference is kept on success. */
static int spw_member_attach(struct spw_group *g, unsigned int idx, int fd)
{
	struct spw_member *m = &g->members[idx];
	struct socket *sock;
	struct sock *sk;
	unsigned int i;
	int err;

	sock = sockfd_lookup(fd, &err);
	if (!sock)
		return err;		/* -EBADF or -ENOTSOCK */
	sk = sock->sk;
	err = -EOPNOTSUPP;
	if (!sk || sk->sk_type != SOCK_STREAM || sk->sk_protocol != IPPROTO_TCP ||
	    (sk->sk_family != AF_INET && sk->sk_family != AF_INET6))
		goto err_put;
	err = -EXDEV;
	if (!net_eq(sock_net(sk), current->nsproxy->net_ns))
		goto err_put;
	err = -EINVAL;
	if (READ_ONCE(sk->sk_state) != TCP_LISTEN)
		goto err_put;
	for (i = 0; i < idx; i++)
		if (g->members[i].sock == sock)
			goto err_put;	/* duplicate member */
	m->sock = sock;
	return 0;

err_put:
	sockfd_put(sock);
	return err;
}

long spw_group_create(struct spw_group_create __user *uarg)
{
	struct spw_group_create args;
	unsigned int entries, i;
	struct spw_group *g;
	struct file *file;
	s32 *fds;
	int fd, err;

	if (copy_from_user(&args, uarg, sizeof(args)))
		return -EFAULT;
	if (args.flags & ~SPW_GROUP_F_ALL)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(args.resv); i++)
		if (args.resv[i])
			return -EINVAL;
	if (!args.nr_fds)
		return -EINVAL;
	if (args.nr_fds > SPW_MAX_MEMBERS)
		return -E2BIG;
	entries = args.ring_entries;
	if (!is_power_of_2(entries) || entries > SPW_MAX_RING_ENTRIES)
		return -EINVAL;
	if (args.nr_fds * entries > SPW_MAX_GROUP_SLOTS)
		return -E2BIG;
	if (args.stall_ms != SPW_STALL_OFF && args.stall_ms > 3600 * MSEC_PER_SEC)
		return -EINVAL;

	fds = kvmalloc_array(args.nr_fds, sizeof(*fds), GFP_KERNEL);
	if (!fds)
		return -ENOMEM;
	if (copy_from_user(fds, u64_to_user_ptr(args.fds),
			   array_size(args.nr_fds, sizeof(*fds)))) {
		err = -EFAULT;
		goto err_fds;
	}
	g = spw_group_alloc(args.nr_fds, entries, args.stall_ms);
	if (!g) {
		err = -ENOMEM;
		goto err_fds;
	}
	for (i = 0; i < g->nr; i++) {
		err = spw_member_attach(g, i, fds[i]);
		if (err)
			goto err_group;
	}
	for (i = 0; i < g->nr; i++) {
		err = spw_member_hook(&g->members[i]);
		if (err)
			goto err_group;
	}

	fd = get_unused_fd_flags(O_RDWR |
				 (args.flags & SPW_GROUP_F_CLOEXEC ? O_CLOEXEC : 0));
	if (fd < 0) {
		err = fd;
		goto err_group;
	}
	file = anon_inode_getfile("[spillway-group]", &spw_group_fops, g, O_RDWR);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		err = PTR_ERR(file);
		goto err_group;
	}
	/*
	 * Connections queued before we hooked get their tokens now, before
	 * fd_install(): once the fd is visible another thread may close it.
	 */
	spin_lock_bh(&g->lock);
	for (i = 0; i < g->nr; i++)
		spw_reconcile_locked(&g->members[i]);
	spin_unlock_bh(&g->lock);
	fd_install(fd, file);
	kvfree(fds);
	return fd;

err_group:
	spw_group_destroy(g);
err_fds:
	kvfree(fds);
	return err;
}

long spw_group_stats(struct spw_group *g, struct spw_group_stats __user *uarg)
{
	struct spw_member_stats *ms, tot = {};
	struct spw_group_stats args;
	unsigned int i, n;
	u64 stale;
	long ret;

	if (copy_from_user(&args, uarg, sizeof(args)))
		return -EFAULT;
	if (args.resv)
		return -EINVAL;
	n = min(args.nr, g->nr);
	ms = kvcalloc(g->nr, sizeof(*ms), GFP_KERNEL);
	if (!ms)
		return -ENOMEM;

	spin_lock_bh(&g->lock);
	for (i = 0; i < g->nr; i++) {
		const struct spw_counters *c = &g->members[i].st;
		const struct spw_ring_acct *a = &g->acct[i];

		ms[i].arrived = c->arrived;
		ms[i].delivered = c->delivered;
		ms[i].spilled_out = c->spilled_out;
		ms[i].spilled_in = c->spilled_in;
		ms[i].dropped = c->dropped;
		ms[i].rehomed = c->rehomed;
		ms[i].pending = a->pending;
		ms[i].outstanding = spw_ring_outstanding(a);
		ms[i].ring_entries = a->entries;
		ms[i].state = g->rings[i].state;
	}
	stale = g->stale;
	spin_unlock_bh(&g->lock);

	for (i = 0; i < g->nr; i++) {
		tot.arrived += ms[i].arrived;
		tot.delivered += ms[i].delivered;
		tot.spilled_out += ms[i].spilled_out;
		tot.spilled_in += ms[i].spilled_in;
		tot.dropped += ms[i].dropped;
		tot.rehomed += ms[i].rehomed;
		tot.pending += ms[i].pending;
		tot.outstanding += ms[i].outstanding;
		tot.ring_entries += ms[i].ring_entries;
	}
	ret = g->nr;
	if (n && copy_to_user(u64_to_user_ptr(args.members), ms,
			      array_size(n, sizeof(*ms))))
		ret = -EFAULT;
	else if (copy_to_user(&uarg->total, &tot, sizeof(tot)) ||
		 put_user(stale, &uarg->stale))
		ret = -EFAULT;
	kvfree(ms);
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
	default:
		return -ENOTTY;
	}
}

static int spw_group_release(struct inode *inode, struct file *file)
{
	spw_group_put(file->private_data);
	return 0;
}

/* /proc/PID/fdinfo/FD of a group fd: one line per member, for operators. */
static void spw_group_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct spw_group *g = file->private_data;
	unsigned int i;

	seq_printf(m, "spw-members:\t%u\nspw-ring-entries:\t%u\n", g->nr,
		   g->entries);
	spin_lock_bh(&g->lock);
	for (i = 0; i < g->nr; i++) {
		const struct spw_counters *c = &g->members[i].st;

		seq_printf(m,
			   "spw-member-%u:\tstate=%u arrived=%llu delivered=%llu spilled_out=%llu spilled_in=%llu dropped=%llu rehomed=%llu outstanding=%u\n",
			   i, g->rings[i].state, c->arrived, c->delivered,
			   c->spilled_out, c->spilled_in, c->dropped, c->rehomed,
			   spw_ring_outstanding(&g->acct[i]));
	}
	spin_unlock_bh(&g->lock);
}

static const struct file_operations spw_group_fops = {
	.owner		= THIS_MODULE,
	.release	= spw_group_release,
	.unlocked_ioctl	= spw_group_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.show_fdinfo	= spw_group_show_fdinfo,
};
