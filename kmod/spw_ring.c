// SPDX-License-Identifier: GPL-2.0
/*
 * spw_ring.c - accept completion rings: open, mmap, enter, poll, close.
 *
 * Connections are handed over only here, in the consumer's own context:
 * an accept on the member the token names, into a socket, file and fd
 * made first (a failure for want of them leaves the connection queued),
 * one CQE written, the fd installed in the caller's table. The tail is
 * published with a single smp_store_release() per enter
 * (spw_ring_post), which pairs with the library's load-acquire. The
 * head is read with READ_ONCE() and trusted only as "slots in use",
 * clamped to the ring size; the kernel keeps its own tail (acct.ktail)
 * and never reads the shared one back.
 *
 * A ring's CQEs belong to one file table at a time, its owner: their fds
 * are numbers in that table. spw_ring_claim() gives the CQ to the table
 * that enters, unless another table still has CQEs to consume (-EBUSY);
 * ->flush, when the owner closes its last fd of the ring, discards what
 * it left (fds of its own table) and frees the CQ for the next one.
 */
#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hrtimer.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/mm.h>
#include <linux/poll.h>
#include <linux/rcupdate.h>
#include <linux/seq_file.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <net/sock.h>

#include "spw_compat.h"
#include "spw_internal.h"

/* The CQE array starts on its own cache line. */
#define SPW_CQES_OFFSET	ALIGN(sizeof(struct spw_ring_hdr), SMP_CACHE_BYTES)

static const struct file_operations spw_ring_fops;

static struct spw_ring_acct *spw_acct(struct spw_ring *r)
{
	return &r->group->acct[r->idx];
}

#ifdef SPW_HAVE_URING_CMD_CANCELABLE
static int spw_uring_wake(struct wait_queue_entry *wait, unsigned int mode,
			  int sync, void *key);
#endif

int spw_ring_init(struct spw_ring *r, struct spw_group *g, unsigned int idx)
{
	struct spw_ring_acct *a = &g->acct[idx];

	r->group = g;
	r->idx = idx;
	r->state = SPW_MEMBER_NEW;
	spin_lock_init(&r->lock);
	mutex_init(&r->post_lock);
	init_waitqueue_head(&r->wq);
#ifdef SPW_HAVE_URING_CMD_CANCELABLE
	INIT_LIST_HEAD(&r->parked);
	init_waitqueue_func_entry(&r->park_wait, spw_uring_wake);
#endif
	r->tokens = kvcalloc(g->entries, sizeof(*r->tokens), GFP_KERNEL_ACCOUNT);
	if (!r->tokens)
		return -ENOMEM;
	a->entries = g->entries;
	/*
	 * A ring nobody has opened yet still takes work (workers start
	 * late), but only when no ring with a consumer can.
	 */
	a->live = 1;
	a->unattended = 1;
	a->last_active = (unsigned int)jiffies;
	a->work_since = a->last_active;
	a->khead = &r->dummy_head;
	return 0;
}

/* Shared memory of @r: zeroed pages charged to the caller's memory cgroup. */
static struct spw_ring_hdr *spw_ring_mem_alloc(struct spw_ring *r, size_t bytes)
{
	/* NORETRY: past memory.max the open fails with -ENOMEM, no OOM kill */
	const gfp_t gfp = GFP_KERNEL_ACCOUNT | __GFP_ZERO | __GFP_NOWARN |
			  __GFP_NORETRY;
	unsigned int i, n = PAGE_ALIGN(bytes) >> PAGE_SHIFT;
	struct page **pages;
	void *va;

	/* RETRY_MAYFAIL: past memory.max this fails too, rather than OOM-kill */
	pages = kvcalloc(n, sizeof(*pages), GFP_KERNEL_ACCOUNT | __GFP_RETRY_MAYFAIL);
	if (!pages)
		return NULL;
	for (i = 0; i < n; i++) {
		pages[i] = alloc_page(gfp);
		if (!pages[i])
			goto err_pages;
	}
	va = vmap(pages, n, VM_MAP, PAGE_KERNEL);
	if (!va)
		goto err_pages;
	r->pages = pages;
	r->nr_pages = n;
	return va;

err_pages:
	while (i--)
		__free_page(pages[i]);
	kvfree(pages);
	return NULL;
}

static void spw_ring_mem_free(struct spw_ring_hdr *hdr, struct page **pages,
			      unsigned int n)
{
	if (!hdr)
		return;
	vunmap(hdr);
	while (n--)
		__free_page(pages[n]);
	kvfree(pages);
}

void spw_ring_free(struct spw_ring *r)
{
	spw_ring_mem_free(r->hdr, r->pages, r->nr_pages);
	r->hdr = NULL;
	r->pages = NULL;
	kvfree(r->tokens);
	r->tokens = NULL;
}

void spw_addr_fill(struct spw_addr *a, const struct sockaddr_storage *ss)
{
	memset(a, 0, sizeof(*a));
	a->family = ss->ss_family;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)ss;

		a->port = ntohs(sin->sin_port);
		a->addr[0] = (__force u32)sin->sin_addr.s_addr;
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)ss;

		a->port = ntohs(sin6->sin6_port);
		memcpy(a->addr, &sin6->sin6_addr, sizeof(a->addr));
		a->scope_id = sin6->sin6_scope_id;
	}
}

static size_t spw_ring_bytes(const struct spw_group *g)
{
	return SPW_CQES_OFFSET + (size_t)g->entries * sizeof(struct spw_cqe);
}

/*
 * The client's address. The local end is not copied: it is the fd's own
 * (getsockname() when a server asks), and the member's address is in the
 * ring header (struct spw_cqe).
 */
static void spw_cqe_fill_peer(struct spw_cqe *cqe, struct socket *sock)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (kernel_getpeername(sock, (struct sockaddr *)&ss) < 0)
		ss.ss_family = AF_UNSPEC;
	spw_addr_fill(&cqe->peer, &ss);
}

/* Slots in use per the consumer's head, or -1 when the head is garbage. */
static long spw_ring_used(struct spw_ring *r)
{
	u32 used = spw_acct(r)->ktail - READ_ONCE(r->hdr->head);

	if (used > r->group->entries)
		return -1;
	return used;
}

/*
 * Take up to @n of @r's waiting tokens into @toks, in order: they are
 * being handed over now (inflight, not stealable). With none of its own,
 * the ring first takes what waits behind a stalled sibling, once the
 * stall timer has seen some. One hold of the ring's lock. Under post_lock.
 */
static unsigned int spw_ring_take(struct spw_ring *r, u32 *toks, unsigned int n)
{
	struct spw_group *g = r->group;
	struct spw_ring_acct *a = spw_acct(r);
	unsigned int mask = g->entries - 1, i;

	if (!spw_fifo_len(r)) {
		/*
		 * Nothing of our own: no lock, unless a stalled sibling's work
		 * can be stolen. A token pushed after this look wakes the ring.
		 */
		if (!READ_ONCE(g->stalled_work))
			return 0;
		spin_lock_bh(&g->lock);
		spw_ring_steal_locked(r);
		spin_unlock_bh(&g->lock);
	}
	spin_lock_bh(&r->lock);
	n = min(n, spw_fifo_len(r));
	for (i = 0; i < n; i++)
		toks[i] = r->tokens[(r->tok_head + i) & mask];
	WRITE_ONCE(r->tok_head, r->tok_head + n);
	WRITE_ONCE(a->inflight, a->inflight + n);
	spin_unlock_bh(&r->lock);
	return n;
}

/*
 * A token of @m taken by @r is finished: handed over, or @stale (its
 * accept found nothing). The listener's side of it, under the member's
 * lock: an arrival that raced with the accept is placed now.
 */
static void spw_token_finish(struct spw_ring *r, struct spw_member *m, bool stale)
{
	spin_lock_bh(&m->lock);
	if (stale)
		m->st.stale++;
	else if (m->idx != r->idx)
		m->st.spilled_out++;
	spw_token_retire_locked(m);
	spin_unlock_bh(&m->lock);
}

/*
 * Hand one connection of member @origin to the caller, its CQE at @cqe
 * (a slot of the ring's CQ, or an io_uring command's). Returns 1 when a
 * CQE was written, 0 when the token was stale
 * (someone accept()ed on the listener directly, or it stopped listening),
 * or -errno when the caller cannot take it (out of fds or memory): the
 * connection stays queued. No lock held: the ring's side is counted once
 * per batch (spw_ring_post_batch()).
 */
static int spw_ring_post_one(struct spw_ring *r, u32 origin, u32 aflags,
			     struct spw_cqe *cqe)
{
	struct spw_group *g = r->group;
	struct spw_member *m = &g->members[origin];
	struct socket *lsock = m->sock, *sock;
	struct file *file;
	int fd, err;

	/*
	 * As accept4() does it, everything that can fail for want of fds or
	 * memory comes before the accept: a failure leaves the connection in
	 * the listener's queue. The socket is made as kernel_accept() makes
	 * it; its label ends as accept()'s: sock_create_lite() labels the
	 * inode as a kernel socket's, then inet_accept()'s sock_graft()
	 * relabels it from the child sock. accept()'s own
	 * security_socket_accept() is not exported and does not run
	 * (docs/architecture.md, "Security").
	 */
	fd = get_unused_fd_flags(aflags & SPW_ACCEPT_CLOEXEC ? O_CLOEXEC : 0);
	if (fd < 0)
		return fd;
	err = sock_create_lite(lsock->sk->sk_family, lsock->sk->sk_type,
			       lsock->sk->sk_protocol, &sock);
	if (err)
		goto err_fd;
	/* as accept4(): the file's release puts the module of these ops */
	sock->ops = lsock->ops;
	__module_get(sock->ops->owner);
	file = sock_alloc_file(sock, aflags & SPW_ACCEPT_NONBLOCK ? O_NONBLOCK : 0,
			       lsock->sk->sk_prot_creator->name);
	if (IS_ERR(file)) {
		err = PTR_ERR(file);	/* released @sock */
		goto err_fd;
	}
	err = spw_ops_accept(lsock, sock, O_NONBLOCK);
	if (err)
		goto err_file;

	spw_cqe_fill_peer(cqe, sock);
	cqe->fd = fd;
	cqe->flags = 0;
	if (origin != r->idx)
		cqe->flags = SPW_CQE_F_SPILLED;
	cqe->origin = origin;
	cqe->member = r->idx;
	cqe->resv[0] = 0;
	cqe->resv[1] = 0;
	fd_install(fd, file);
	spw_token_finish(r, m, false);
	return 1;

err_file:
	fput(file);
	put_unused_fd(fd);
	/*
	 * -EAGAIN: nothing queued (someone accept()ed it on the listener);
	 * -EINVAL: the member stopped listening (shutdown()), and its queue
	 * was flushed with it. The token is stale either way.
	 */
	if (err == -EAGAIN || err == -EINVAL) {
		spw_token_finish(r, m, true);
		return 0;
	}
	return err;
err_fd:
	put_unused_fd(fd);
	return err;
}

/*
 * Hand over the @n connections of @toks (spw_ring_take()), then count the
 * ring's side of them in one hold of its lock: the CQEs (the kernel's
 * tail) and the end of their tokens count together for the policy. With
 * @direct (an io_uring command, @n 1) the CQE goes there and not to the
 * ring's CQ: the connection is the consumer's at once, and the tail stays.
 * *@posted grows by the CQEs written. When the consumer cannot take one
 * (-errno), that token and those after it go back to the front in order
 * (the connections keep their turn), the ring takes no new work until its
 * consumer comes back (enter or poll), and what waits for it moves on to
 * siblings that can take it; what no sibling has room for stays. Under
 * post_lock.
 */
static int spw_ring_post_batch(struct spw_ring *r, const u32 *toks,
			       unsigned int n, u32 aflags, unsigned int *posted,
			       struct spw_cqe *direct)
{
	struct spw_group *g = r->group;
	struct spw_member *self = &g->members[r->idx];
	struct spw_ring_acct *a = spw_acct(r);
	unsigned int i, done = 0, spilled = 0, mask = g->entries - 1;
	int err = 0;

	for (i = 0; i < n; i++) {
		struct spw_cqe *cqe = direct ?:
			&r->cqes[(a->ktail + done) & mask];

		err = spw_ring_post_one(r, toks[i], aflags, cqe);
		if (err < 0)
			break;
		if (err && toks[i] != r->idx)
			spilled++;
		done += err;
	}
	spin_lock_bh(&r->lock);
	if (!direct)
		WRITE_ONCE(a->ktail, a->ktail + done);
	WRITE_ONCE(a->pending, a->pending - i);
	WRITE_ONCE(a->inflight, a->inflight - n);
	self->st.delivered += done;
	self->st.spilled_in += spilled;
	if (err < 0) {
		unsigned int j;

		/* toks[i..n) back to the front, in their order */
		for (j = n; j-- > i;) {
			WRITE_ONCE(r->tok_head, r->tok_head - 1);
			r->tokens[r->tok_head & mask] = toks[j];
		}
		WRITE_ONCE(a->refusing, 1);
	}
	spw_refile(g, r->idx);
	spw_ring_work_posted_locked(r);
	spin_unlock_bh(&r->lock);
	*posted += done;
	if (err < 0)
		spw_ring_rehome(r, true);
	return err < 0 ? err : 0;
}

/*
 * The caller's file table takes the ring's CQ: at once if it owns it or
 * nobody does, or when the owner has consumed all it was given. -EBUSY
 * while another table has CQEs to consume (or wrote a head we cannot
 * believe): they are fds of its own. Under post_lock.
 */
static int spw_ring_claim(struct spw_ring *r)
{
	struct files_struct *files = current->files;

	lockdep_assert_held(&r->post_lock);
	if (r->owner == files)
		return 0;
	if (r->owner && spw_ring_used(r))
		return -EBUSY;
	if (!++r->owner_id)
		r->owner_id = 1;
	WRITE_ONCE(r->owner, files);
	/*
	 * Pairs with the library's load-acquire of the owner: whoever reads
	 * this id also reads the head a departed owner's flush reset. The
	 * tail's release orders it before this owner's first CQE.
	 */
	smp_store_release(&r->hdr->owner, r->owner_id);
	return 0;
}

/*
 * Hand over pending connections while the CQ has room, at most *@budget of
 * them (decremented by the number posted). *@owner is the caller's owner
 * id. Returns the number of CQEs in the ring, or -errno when nothing could
 * be done; *@stop when the caller must not wait (it cannot take work, or
 * its head is garbage).
 */
static long spw_ring_post(struct spw_ring *r, u32 aflags, unsigned int *budget,
			  u32 *owner, bool *stop)
{
	struct spw_group *g = r->group;
	unsigned int posted = 0;
	long used, ret;

	mutex_lock(&r->post_lock);
	ret = spw_ring_claim(r);
	if (ret)
		goto out;
	*owner = r->owner_id;
	for (;;) {
		u32 toks[SPW_BATCH];
		unsigned int n;
		int err;

		used = spw_ring_used(r);
		if (used < 0) {
			/*
			 * The consumer wrote a head we cannot believe. Its ring
			 * counts as full; its waiting connections go to siblings.
			 */
			spw_ring_rehome(r, false);
			ret = -EINVAL;
			break;
		}
		n = min3(g->entries - (unsigned int)used, *budget - posted,
			 (unsigned int)SPW_BATCH);
		if (!n)
			break;
		n = spw_ring_take(r, toks, n);
		if (!n)
			break;
		err = spw_ring_post_batch(r, toks, n, aflags, &posted, NULL);
		if (err < 0) {
			ret = err;
			break;
		}
	}
	if (posted) {
		/* the one release of the tail per call; pairs with the library's acquire */
		smp_store_release(&r->hdr->tail, spw_acct(r)->ktail);
	}
	*budget -= posted;
	*stop = ret < 0;
	if (ret >= 0 || posted) {
		used = spw_ring_used(r);
		ret = used < 0 ? -EINVAL : used;
	}
out:
	mutex_unlock(&r->post_lock);
	return ret;
}

static bool spw_ring_has_tokens(struct spw_ring *r)
{
	return spw_fifo_len(r) != 0;
}

/*
 * The consumer is here (in enter, or polling the ring): it counts as
 * responsive from now on, may take work again if it could not, and
 * SPW_POLICY_CPU learns where it runs. The policy re-files its ring when
 * the consumer goes idle (@waiting > 0, or a poll), with the head it has
 * moved since, and otherwise only when the ring became able or unable to
 * take work: an enter that posts re-files it with its batch, and a level
 * left too high meanwhile only keeps work away, never sends too much.
 */
static void spw_ring_touch(struct spw_ring *r, int waiting, bool poll)
{
	struct spw_group *g = r->group;
	struct spw_ring_acct *a = spw_acct(r);
	struct spw_clock clock;
	bool could;

	spw_clock_now(g, &clock);
	spin_lock_bh(&r->lock);
	could = !a->refusing && spw_ring_responsive(a, &clock);
	/*
	 * Entering is progress. Polling is only while nothing waits for an
	 * enter: a consumer that keeps polling a readable ring without ever
	 * entering is not taking its work, and must not look responsive.
	 */
	if (!poll || r->tok_head == r->tok_tail) {
		WRITE_ONCE(a->last_active, (unsigned int)jiffies);
		WRITE_ONCE(a->work_since, a->last_active);
	}
	WRITE_ONCE(a->waiting, a->waiting + waiting);
	if (poll)
		WRITE_ONCE(a->polled, 1);
	WRITE_ONCE(a->refusing, 0);
	if (g->cpu_ring && a->live)
		WRITE_ONCE(g->cpu_ring[smp_processor_id()], r->idx);
	if (waiting > 0 || poll || could != spw_ring_responsive(a, &clock))
		spw_refile(g, r->idx);
	spin_unlock_bh(&r->lock);
}

/*
 * A poll: the consumer waits in poll/epoll/io_uring. Without the ring's
 * lock when nothing would change (marked as polling already in this
 * jiffy, able to take work, nothing waiting): an idle event loop's polls
 * must not make it its ring lock's busiest user. A poll within the same
 * jiffy changes no clock the policy reads.
 */
static void spw_ring_poll_touch(struct spw_ring *r)
{
	const struct spw_ring_acct *a = spw_acct(r);

	if (READ_ONCE(a->polled) && !READ_ONCE(a->refusing) &&
	    READ_ONCE(a->last_active) == (unsigned int)jiffies &&
	    !spw_ring_has_tokens(r))
		return;
	spw_ring_touch(r, 0, true);
}

/*
 * An enter or an io_uring command begins: spw_ring_touch(r, 0, false),
 * without the ring's lock when it would write what is there already (the
 * consumer was here in this jiffy, takes work, its stall clock is this
 * jiffy, and SPW_POLICY_CPU knows its CPU). A consumer at full speed
 * enters many times a jiffy; only the first takes the lock. A race with a
 * tick only makes the consumer look as if it came a jiffy earlier.
 */
static void spw_ring_arrive(struct spw_ring *r)
{
	const struct spw_ring_acct *a = spw_acct(r);
	const struct spw_group *g = r->group;
	unsigned int now = (unsigned int)jiffies;

	if (READ_ONCE(a->last_active) == now && READ_ONCE(a->work_since) == now &&
	    !READ_ONCE(a->refusing) &&
	    (!g->cpu_ring ||
	     READ_ONCE(g->cpu_ring[raw_smp_processor_id()]) == r->idx))
		return;
	spw_ring_touch(r, 0, false);
}

/* Work landed on @r, or the stall timer says a sibling's work can be taken. */
static bool spw_ring_should_wake(struct spw_ring *r, unsigned int seq)
{
	return spw_ring_has_tokens(r) || READ_ONCE(r->group->steal_seq) != seq;
}

/*
 * Sleep until spw_ring_should_wake(). @seq was read before the caller last
 * looked for work, so a steal signalled since then wakes us at once.
 */
static void spw_ring_wait(struct spw_ring *r, unsigned int seq, bool timed,
			  ktime_t left)
{
	spw_ring_touch(r, 1, false);
	if (timed)
		wait_event_interruptible_hrtimeout(r->wq, spw_ring_should_wake(r, seq),
						   left);
	else
		wait_event_interruptible(r->wq, spw_ring_should_wake(r, seq));
	spw_ring_touch(r, -1, false);
}

static long spw_ring_enter(struct spw_ring *r, struct spw_enter __user *uarg)
{
	struct spw_enter args;
	ktime_t deadline = 0;
	unsigned int want, budget;
	bool timed, stop;
	u32 owner = 0;
	long ret;

	if (copy_from_user(&args, uarg, sizeof(args)))
		return -EFAULT;
	if (args.flags & ~SPW_ENTER_F_ALL || args.accept_flags & ~SPW_ACCEPT_ALL ||
	    args.resv)
		return -EINVAL;
	timed = args.flags & SPW_ENTER_F_TIMEOUT;
	if (timed) {
		if (args.timeout_ns < 0)
			return -EINVAL;
		deadline = ktime_add_safe(ktime_get(), ns_to_ktime(args.timeout_ns));
	}
	/* more than the ring can hold would never be satisfied */
	want = min(args.min_complete, r->group->entries);
	/*
	 * A consumer that takes one connection per accept() asks for one:
	 * what it was handed and never took dies with it if it is killed,
	 * while what still waits here moves on to a sibling.
	 */
	budget = args.max_post ?: UINT_MAX;

	spw_ring_arrive(r);
	for (;;) {
		unsigned int seq = READ_ONCE(r->group->steal_seq);
		ktime_t left = 0;

		/* poll stops reporting this steal: we are about to look */
		WRITE_ONCE(r->seen_seq, seq);
		ret = spw_ring_post(r, args.accept_flags, &budget, &owner, &stop);
		if (ret == -EBUSY)
			return ret;
		/* the caller learns its owner id once, when it changes */
		if (owner != args.owner) {
			if (put_user(owner, &uarg->owner))
				return -EFAULT;
			args.owner = owner;
		}
		/* a spent budget ends the call: waiting could not post more */
		if (ret < 0 || ret >= want || !budget || stop)
			return ret;
		if (signal_pending(current)) {
			if (ret)
				return ret;
			/*
			 * Restartable like other waits, but not with a relative
			 * timeout: a restart would wait all of it again, and a
			 * periodic signal would keep the call from ever timing
			 * out. epoll_wait() returns -EINTR there too.
			 */
			return timed ? -EINTR : -ERESTARTSYS;
		}
		if (timed) {
			left = ktime_sub(deadline, ktime_get());
			if (ktime_to_ns(left) <= 0)
				return ret ?: -ETIME;
		}
		spw_ring_wait(r, seq, timed, left);
	}
}

/*
 * One connection for an io_uring command, its CQE at @cqe: the fd, 0 when
 * none waits (nor a stalled sibling's), or -errno as an enter's. A stale
 * token posts nothing: the next one is taken. Under post_lock.
 */
static int spw_ring_take_one(struct spw_ring *r, u32 aflags,
			     struct spw_cqe *cqe)
{
	unsigned int posted = 0;
	int err;
	u32 tok;

	do {
		if (!spw_ring_take(r, &tok, 1))
			return 0;
		err = spw_ring_post_batch(r, &tok, 1, aflags, &posted, cqe);
	} while (!err && !posted);
	return err ?: 1;
}

/*
 * IORING_OP_URING_CMD SPW_URING_ACCEPT (the uapi header says what it
 * promises). Issued first without blocking, in the submitter's task and
 * under its io_uring's lock: a connection that waits completes it there.
 * With none, it waits, in one of two ways:
 *
 *  - parked (kernels with io_uring_cmd_mark_cancelable(), 6.7+): on the
 *    ring's list, without a thread. An entry on the ring's wait queue
 *    (spw_uring_wake()) hands parked commands to task work in their
 *    submitter when work lands; spw_uring_tw() takes a connection there,
 *    or parks the command again if a sibling of it was faster. io_uring
 *    cancels what is parked when the io_uring or its task goes away
 *    (IO_URING_F_CANCEL); IORING_OP_ASYNC_CANCEL does not reach parked
 *    commands, SPW_URING_CANCEL does.
 *  - in io-wq (6.1): -EAGAIN sends the command to an io-wq worker, a
 *    thread of the submitter's process (its file table and memory), which
 *    issues it again, blocking; it sleeps on the ring as an enter does.
 *    A cancel (ASYNC_CANCEL, the io_uring's or task's exit) wakes it with
 *    a notification signal. Parking there would hang the task's exit: a
 *    command nobody completes is waited for forever.
 *
 * Either way the command counts as a waiting consumer for placement while
 * it waits, and -ECANCELED means it took nothing.
 */

/* What an SPW_URING_ACCEPT keeps between its issue and its completion. */
struct spw_uring_pdu {
	struct list_head node;	/* on spw_ring.parked, under wq.lock */
	u64 cqe_addr;
	u32 aflags;		/* SPW_ACCEPT_*, and SPW_PDU_CANCELLED */
	u32 cancel_seq;		/* spw_ring.cancel_seq when it first waited */
};

/* io_uring cancelled the parked command: its task work ends it */
#define SPW_PDU_CANCELLED	BIT(31)

static struct spw_uring_pdu *spw_uring_pdu(struct io_uring_cmd *cmd)
{
	BUILD_BUG_ON(sizeof(struct spw_uring_pdu) > sizeof_field(struct io_uring_cmd, pdu));
	return (struct spw_uring_pdu *)cmd->pdu;
}

/*
 * Complete @cmd with a connection if one waits for @r (or a stalled
 * sibling): 1 when completed, 0 when none waits, -errno as an enter's, or
 * -EAGAIN when @trylock and another caller posts for @r right now.
 */
static int spw_uring_try(struct spw_ring *r, struct io_uring_cmd *cmd,
			 const struct spw_uring_pdu *pdu, unsigned int issue_flags,
			 bool trylock)
{
	struct spw_cqe cqe;
	int ret;

	if (!trylock)
		mutex_lock(&r->post_lock);
	else if (!mutex_trylock(&r->post_lock))
		return -EAGAIN;
	ret = spw_ring_take_one(r, pdu->aflags, &cqe);
	mutex_unlock(&r->post_lock);
	if (ret <= 0)
		return ret;
	/*
	 * A steal moves a sibling's tokens here without a wake-up for each:
	 * the next waiting command takes the next one.
	 */
	if (spw_ring_has_tokens(r) && wq_has_sleeper(&r->wq))
		wake_up_interruptible_poll(&r->wq, EPOLLIN | EPOLLRDNORM);
	/* the fd is installed: it is the caller's whatever the copy does */
	if (pdu->cqe_addr &&
	    copy_to_user(u64_to_user_ptr(pdu->cqe_addr), &cqe, sizeof(cqe)))
		pr_debug("uring accept: CQE not written, fd %d\n", cqe.fd);
	/*
	 * A result >= 0 is posted here, never returned: 6.1's io_uring takes
	 * a positive return for an error code and never completes a command
	 * that an io-wq worker issued.
	 */
	io_uring_cmd_done(cmd, cqe.fd, 0, issue_flags);
	return 1;
}

#ifdef SPW_HAVE_URING_CMD_CANCELABLE
static void spw_uring_tw(struct io_uring_cmd *cmd, unsigned int issue_flags);

/*
 * @r's wait queue was woken (work landed, a steal can be taken, or a
 * cancel): hand parked commands to their submitters' task work, as many
 * as connections wait (at least one: a steal shows in no count), all of
 * them on a cancel. Under wq.lock, in any context.
 */
static int spw_uring_wake(struct wait_queue_entry *wait, unsigned int mode,
			  int sync, void *key)
{
	struct spw_ring *r = container_of(wait, struct spw_ring, park_wait);
	unsigned int n = max(spw_fifo_len(r), 1U);
	struct spw_uring_pdu *pdu, *tmp;

	/* O(parked): the commands one server keeps in flight on its ring */
	list_for_each_entry_safe(pdu, tmp, &r->parked, node) {
		struct io_uring_cmd *cmd = container_of((void *)pdu,
							struct io_uring_cmd, pdu);

		if (pdu->cancel_seq == r->cancel_seq) {
			if (!n)
				continue;
			n--;
		}
		list_del_init(&pdu->node);
		io_uring_cmd_complete_in_task(cmd, spw_uring_tw);
	}
	if (list_empty(&r->parked))
		list_del_init(&wait->entry);
	return 0;
}

/*
 * Park @cmd on @r. Work that landed before the entry was on the wait queue
 * woke nobody: look once more, and hand the command on at once if so.
 */
static void spw_uring_park(struct spw_ring *r, struct io_uring_cmd *cmd)
{
	struct spw_uring_pdu *pdu = spw_uring_pdu(cmd);
	unsigned int seq = READ_ONCE(r->group->steal_seq);

	spin_lock_irq(&r->wq.lock);
	if (list_empty(&r->parked))
		__add_wait_queue(&r->wq, &r->park_wait);
	list_add_tail(&pdu->node, &r->parked);
	spin_unlock_irq(&r->wq.lock);
	/* pairs with wq_has_sleeper() after a token is pushed */
	smp_mb();
	if (spw_ring_should_wake(r, seq) || pdu->cancel_seq != READ_ONCE(r->cancel_seq))
		wake_up_interruptible_poll(&r->wq, EPOLLIN | EPOLLRDNORM);
}

/* Take @cmd off @r's parked list; false when it was not on it. */
static bool spw_uring_unpark(struct spw_ring *r, struct io_uring_cmd *cmd)
{
	struct spw_uring_pdu *pdu = spw_uring_pdu(cmd);
	bool parked;

	spin_lock_irq(&r->wq.lock);
	parked = !list_empty(&pdu->node);
	list_del_init(&pdu->node);
	if (parked && list_empty(&r->parked))
		__remove_wait_queue(&r->wq, &r->park_wait);
	spin_unlock_irq(&r->wq.lock);
	return parked;
}

/* The end of a parked command's wait: the consumer is here again. */
static void spw_uring_finish(struct spw_ring *r, struct io_uring_cmd *cmd,
			     int err, unsigned int issue_flags)
{
	spw_ring_touch(r, -1, false);
	if (err)
		io_uring_cmd_done(cmd, err, 0, issue_flags);
}

/*
 * Task work in the submitter (its file table, its memory), handed on by
 * spw_uring_wake(): take a connection, or park again when another took it.
 */
static void spw_uring_tw(struct io_uring_cmd *cmd, unsigned int issue_flags)
{
	struct spw_ring *r = cmd->file->private_data;
	struct spw_uring_pdu *pdu = spw_uring_pdu(cmd);
	int ret = -ECANCELED;

	if (!(issue_flags & IO_URING_F_TASK_DEAD) && !(pdu->aflags & SPW_PDU_CANCELLED) &&
	    pdu->cancel_seq == READ_ONCE(r->cancel_seq)) {
		ret = spw_uring_try(r, cmd, pdu, issue_flags, false);
		if (!ret) {
			spw_uring_park(r, cmd);
			return;
		}
	}
	spw_uring_finish(r, cmd, ret < 0 ? ret : 0, issue_flags);
}

/*
 * io_uring cancels @cmd (its io_uring or task goes). If it is parked, its
 * task work completes it (if not, the task work it is on its way to does).
 * Not here: a ring's exit cancels from a kworker while the submitter may
 * live on, and 6.12's lockdep then objects to a CQE of a DEFER_TASKRUN
 * ring posted by anyone but the submitter (a false positive io_uring
 * fixed after 6.12); its exit moves our task work to the submitter.
 */
static void spw_uring_cancel_parked(struct spw_ring *r, struct io_uring_cmd *cmd)
{
	if (spw_uring_unpark(r, cmd)) {
		spw_uring_pdu(cmd)->aflags |= SPW_PDU_CANCELLED;
		io_uring_cmd_complete_in_task(cmd, spw_uring_tw);
	}
}

/* Wait without a thread: the command completes later. */
static int spw_uring_wait(struct spw_ring *r, struct io_uring_cmd *cmd,
			  unsigned int issue_flags)
{
	io_uring_cmd_mark_cancelable(cmd, issue_flags);
	spw_ring_touch(r, 1, false);
	spw_uring_park(r, cmd);
	return -EIOCBQUEUED;
}
#else
static int spw_uring_wait(struct spw_ring *r, struct io_uring_cmd *cmd,
			  unsigned int issue_flags)
{
	/* to io-wq, which issues it again without IO_URING_F_NONBLOCK */
	return -EAGAIN;
}
#endif

/* Sleep in an io-wq worker until work, a cancel, or a signal. */
static int spw_uring_wait_blocking(struct spw_ring *r, struct io_uring_cmd *cmd,
				   unsigned int issue_flags)
{
	struct spw_uring_pdu *pdu = spw_uring_pdu(cmd);
	int ret;

	for (;;) {
		unsigned int seq = READ_ONCE(r->group->steal_seq);

		/* poll stops reporting this steal: we are about to look */
		WRITE_ONCE(r->seen_seq, seq);
		ret = spw_uring_try(r, cmd, pdu, issue_flags, false);
		if (ret)
			return ret < 0 ? ret : -EIOCBQUEUED;
		if (signal_pending(current) || pdu->cancel_seq != READ_ONCE(r->cancel_seq))
			return -ECANCELED;
		spw_ring_touch(r, 1, false);
		wait_event_interruptible(r->wq, spw_ring_should_wake(r, seq) ||
					 pdu->cancel_seq != READ_ONCE(r->cancel_seq));
		spw_ring_touch(r, -1, false);
	}
}

/* SPW_URING_CANCEL: every SPW_URING_ACCEPT waiting on @r ends. */
static int spw_uring_cancel(struct spw_ring *r)
{
	spin_lock_irq(&r->wq.lock);
	r->cancel_seq++;
	spin_unlock_irq(&r->wq.lock);
	/* the parked are handed on by spw_uring_wake(), io-wq's wake */
	wake_up_interruptible_poll(&r->wq, EPOLLIN | EPOLLRDNORM);
	return 0;
}

static int spw_ring_uring_cmd(struct io_uring_cmd *cmd, unsigned int issue_flags)
{
	struct spw_ring *r = cmd->file->private_data;
	struct spw_uring_pdu *pdu = spw_uring_pdu(cmd);
	const struct spw_uring_accept *area;
	struct spw_uring_accept args;
	int ret;

#ifdef SPW_HAVE_URING_CMD_CANCELABLE
	/* no SQE now: what the command needs is in its pdu */
	if (issue_flags & IO_URING_F_CANCEL) {
		spw_uring_cancel_parked(r, cmd);
		return 0;
	}
#endif
	/* a 64-byte SQE's command area is 16 bytes */
	BUILD_BUG_ON(sizeof(args) > 16);
	area = spw_uring_cmd_area(cmd);
	/* in the SQ ring, which user space may rewrite: each field once */
	args.cqe_addr = READ_ONCE(area->cqe_addr);
	args.accept_flags = READ_ONCE(area->accept_flags);
	args.resv = READ_ONCE(area->resv);
	switch (cmd->cmd_op) {
	case SPW_URING_ACCEPT:
		break;
	case SPW_URING_CANCEL:
		if (args.cqe_addr || args.accept_flags || args.resv)
			return -EINVAL;
		return spw_uring_cancel(r);
	default:
		return -ENOTTY;
	}
	if (args.accept_flags & ~SPW_ACCEPT_ALL || args.resv)
		return -EINVAL;
	if (args.cqe_addr &&
	    !access_ok(u64_to_user_ptr(args.cqe_addr), sizeof(struct spw_cqe)))
		return -EFAULT;
	pdu->cqe_addr = args.cqe_addr;
	pdu->aflags = args.accept_flags;
	INIT_LIST_HEAD(&pdu->node);

	/* the consumer is here: responsive, and able to take work again */
	spw_ring_arrive(r);
	/*
	 * SPW_URING_CANCEL ends the commands that wait when it runs: those
	 * that saw an older count. One on its way to io-wq misses it there
	 * (a second issue counts afresh); ASYNC_CANCEL reaches it instead.
	 */
	pdu->cancel_seq = READ_ONCE(r->cancel_seq);
	if (!(issue_flags & IO_URING_F_NONBLOCK))
		return spw_uring_wait_blocking(r, cmd, issue_flags);
	/* poll stops reporting a steal: we are about to look */
	WRITE_ONCE(r->seen_seq, READ_ONCE(r->group->steal_seq));
	ret = spw_uring_try(r, cmd, pdu, issue_flags, true);
	if (ret)
		return ret < 0 ? ret : -EIOCBQUEUED;
	return spw_uring_wait(r, cmd, issue_flags);
}

static long spw_ring_ioctl(struct file *file, unsigned int cmd,
			   unsigned long arg)
{
	struct spw_ring *r = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case SPW_IOC_ENTER:
		return spw_ring_enter(r, uarg);
	case SPW_IOC_GROUP_STATS:
		return spw_group_stats(r->group, uarg);
	default:
		return -ENOTTY;
	}
}

static __poll_t spw_ring_poll(struct file *file, poll_table *wait)
{
	struct spw_ring *r = file->private_data;

	poll_wait(file, &r->wq, wait);
	/* a consumer that waits in poll is here, and responsive while idle */
	spw_ring_poll_touch(r);
	/*
	 * Readable: connections wait to be handed over, a stalled sibling's
	 * work can be taken by an enter, or (for the table they belong to)
	 * CQEs wait to be reaped: the kernel's own tail against the head.
	 */
	if (spw_ring_has_tokens(r) ||
	    READ_ONCE(r->group->steal_seq) != READ_ONCE(r->seen_seq))
		return EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(r->owner) == current->files &&
	    READ_ONCE(spw_acct(r)->ktail) != READ_ONCE(r->hdr->head))
		return EPOLLIN | EPOLLRDNORM;
	return 0;
}

static int spw_ring_match(const void *r, struct file *file, unsigned int fd)
{
	return file->f_op == &spw_ring_fops && file->private_data == r;
}

/*
 * An fd of the ring is being closed (close, exit, exec). When it was the
 * owner's last one, the owner is gone: its unconsumed CQEs name fds of
 * its table, which no other holder may take for its own. They are
 * discarded (the head moves to the kernel's tail) and the CQ is free for
 * the next table to enter. iterate_fd() is O(fds of the closing table),
 * for the owner's closes only, never on the data path; at exit it finds
 * the table's other fds of the ring, which close after this one.
 */
static int spw_ring_flush(struct file *file, fl_owner_t id)
{
	struct spw_ring *r = file->private_data;
	struct spw_group *g = r->group;

	if (READ_ONCE(r->owner) != id)
		return 0;
	mutex_lock(&r->post_lock);
	if (r->owner == id && !iterate_fd(id, 0, spw_ring_match, r)) {
		/* nothing is posted meanwhile (post_lock): ktail is final */
		WRITE_ONCE(r->hdr->head, spw_acct(r)->ktail);
		/* pairs with the library's load-acquire of the owner */
		smp_store_release(&r->hdr->owner, 0);
		WRITE_ONCE(r->owner, NULL);
		spin_lock_bh(&r->lock);
		spw_refile(g, r->idx);
		spin_unlock_bh(&r->lock);
	}
	mutex_unlock(&r->post_lock);
	return 0;
}

static int spw_ring_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct spw_ring *r = file->private_data;

	if (vma->vm_pgoff || vma->vm_end - vma->vm_start > PAGE_ALIGN(r->bytes))
		return -EINVAL;
	/* the pages live until the last ring file is released, after munmap */
	return vm_map_pages(vma, r->pages, r->nr_pages);
}

/* Does any ring of @g but @self take work (open, or never opened)? */
static bool spw_sibling_live_locked(const struct spw_group *g,
				    unsigned int self)
{
	unsigned int i;

	lockdep_assert_held(&g->lock);
	/* O(members), at a ring's last close only */
	for (i = 0; i < g->nr; i++)
		if (i != self && READ_ONCE(g->acct[i].live))
			return true;
	return false;
}

/*
 * @r's consumer is gone: it takes no work. The caller moves its waiting
 * tokens away (spw_ring_rehome()) once it has dropped the group lock.
 */
static void spw_ring_set_closed_locked(struct spw_ring *r)
{
	lockdep_assert_held(&r->group->lock);
	spin_lock(&r->lock);
	WRITE_ONCE(spw_acct(r)->live, 0);
	r->state = SPW_MEMBER_CLOSED;
	spw_refile(r->group, r->idx);
	spin_unlock(&r->lock);
}

/*
 * @r opened: the VACANT sibling, if any (below), has a consumer to hand
 * its work to now. At most one ring is VACANT: only the last ring with a
 * consumer becomes so, and it takes work. Returns it, closed, or NULL.
 */
static struct spw_ring *spw_ring_end_vacancy_locked(struct spw_ring *r)
{
	struct spw_group *g = r->group;
	unsigned int i;

	lockdep_assert_held(&g->lock);
	/* O(members), at a ring's first open only */
	for (i = 0; i < g->nr; i++) {
		if (i != r->idx && g->rings[i].state == SPW_MEMBER_VACANT) {
			spw_ring_set_closed_locked(&g->rings[i]);
			return &g->rings[i];
		}
	}
	return NULL;
}

/*
 * First open, before the fd exists: fresh shared memory for @r, not yet
 * visible to the policy, so that a failure later in the open undoes it
 * without a trace (spw_ring_unprepare()).
 */
static int spw_ring_prepare(struct spw_ring *r)
{
	struct spw_group *g = r->group;
	struct spw_ring_hdr *hdr;

	lockdep_assert_held(&g->open_lock);
	r->bytes = spw_ring_bytes(g);
	hdr = spw_ring_mem_alloc(r, r->bytes);
	if (!hdr)
		return -ENOMEM;
	hdr->ring_mask = g->entries - 1;
	hdr->ring_entries = g->entries;
	hdr->member = r->idx;
	hdr->nr_members = g->nr;
	hdr->cqes_offset = SPW_CQES_OFFSET;
	hdr->served = g->members[r->idx].bound;
	spin_lock_bh(&g->lock);
	spin_lock(&r->lock);
	r->hdr = hdr;
	r->cqes = (void *)hdr + SPW_CQES_OFFSET;
	spin_unlock(&r->lock);
	spin_unlock_bh(&g->lock);
	return 0;
}

/*
 * Detach @r's shared memory: its lock orders this with the writers of its
 * flags. The policy's lockless readers of the head are waited for by the
 * caller (spw_ring_deactivate()).
 */
static void spw_ring_mem_detach(struct spw_ring *r, struct spw_ring_hdr **hdr,
				struct page ***pages)
{
	lockdep_assert_held(&r->group->lock);
	lockdep_assert_held(&r->lock);
	*hdr = r->hdr;
	*pages = r->pages;
	r->hdr = NULL;
	r->pages = NULL;
	r->cqes = NULL;
}

/* The open failed after spw_ring_prepare(): as if it never happened. */
static void spw_ring_unprepare(struct spw_ring *r)
{
	struct spw_group *g = r->group;
	struct spw_ring_hdr *hdr;
	struct page **pages;

	lockdep_assert_held(&g->open_lock);
	spin_lock_bh(&g->lock);
	spin_lock(&r->lock);
	spw_ring_mem_detach(r, &hdr, &pages);
	spin_unlock(&r->lock);
	spin_unlock_bh(&g->lock);
	/* never published to the policy (acct->khead): nobody read it */
	spw_ring_mem_free(hdr, pages, r->nr_pages);
}

/*
 * The first fd of @r exists, and nothing can fail any more: the ring takes
 * work again, now with a consumer, and a VACANT sibling's work comes to it.
 */
static void spw_ring_publish(struct spw_ring *r)
{
	struct spw_group *g = r->group;
	struct spw_ring_acct *a = spw_acct(r);
	struct spw_ring *vacant;

	lockdep_assert_held(&g->open_lock);
	spin_lock_bh(&g->lock);
	spin_lock(&r->lock);
	/* acct->ktail is 0 since init or the last close */
	WRITE_ONCE(a->khead, &r->hdr->head);
	WRITE_ONCE(a->live, 1);
	WRITE_ONCE(a->unattended, 0);
	WRITE_ONCE(a->refusing, 0);
	WRITE_ONCE(a->polled, 0);
	WRITE_ONCE(a->last_active, (unsigned int)jiffies);
	WRITE_ONCE(a->work_since, a->last_active);
	WRITE_ONCE(r->seen_seq, g->steal_seq);
	r->state = SPW_MEMBER_OPEN;
	spw_refile(g, r->idx);
	if (r->tok_head != r->tok_tail)
		spw_hdr_set_flags(r->hdr, SPW_RING_F_WORK_PENDING);
	spin_unlock(&r->lock);
	vacant = spw_ring_end_vacancy_locked(r);
	spin_unlock_bh(&g->lock);
	if (vacant)
		spw_ring_rehome(vacant, false);
}

/*
 * Last close: the consumer is gone; its waiting connections move on to
 * the siblings. When no sibling takes work (every worker of a live group
 * is gone: a one-worker daemon restarting, a master replacing all its
 * workers), they have nowhere to go: the ring stays a target, VACANT, and
 * they wait, as they would in a plain listener's queue, for the next
 * ring to open: a replacement of this member keeps them, another
 * member's worker takes them over. When this close also ends the group
 * (@rehome false), they stay in their listeners' queues for plain
 * accept().
 */
static void spw_ring_deactivate(struct spw_ring *r, bool rehome)
{
	struct spw_group *g = r->group;
	struct spw_ring_acct *a = spw_acct(r);
	struct spw_ring_hdr *hdr;
	struct page **pages;
	bool move = false;

	lockdep_assert_held(&g->open_lock);
	spin_lock_bh(&g->lock);
	if (rehome && spw_sibling_live_locked(g, r->idx)) {
		spw_ring_set_closed_locked(r);
		move = true;
	}
	spin_lock(&r->lock);
	if (!rehome) {
		WRITE_ONCE(a->live, 0);
		r->state = SPW_MEMBER_CLOSED;
		WRITE_ONCE(a->pending, 0);
		WRITE_ONCE(r->tok_head, r->tok_tail);
	} else if (!move) {
		/* poll no longer stands for a consumer that is idle */
		WRITE_ONCE(a->polled, 0);
		WRITE_ONCE(a->unattended, 1);
		r->state = SPW_MEMBER_VACANT;
	}
	/* CQEs already posted belong to the consumer's file table */
	WRITE_ONCE(a->khead, &r->dummy_head);
	WRITE_ONCE(a->ktail, 0);
	WRITE_ONCE(a->refusing, 0);
	/* a VACANT ring's load is its tokens alone now */
	spw_refile(g, r->idx);
	spw_ring_mem_detach(r, &hdr, &pages);
	spin_unlock(&r->lock);
	spin_unlock_bh(&g->lock);
	if (move)
		spw_ring_rehome(r, false);
	/*
	 * A placement decision may still read the old head through the
	 * pointer it loaded (softirq or BHs off: an RCU read side); the
	 * pages go once every such reader is done.
	 */
	if (hdr)
		synchronize_rcu();
	spw_ring_mem_free(hdr, pages, r->nr_pages);
	/* no fd is left, so no enter holds post_lock */
	r->owner = NULL;
}

/* Drop one opener of @r and its group reference. */
static void spw_ring_close(struct spw_ring *r)
{
	struct spw_group *g = r->group;

	mutex_lock(&g->open_lock);
	/* a reference count of one is ours: no fd can take another */
	if (!--r->nr_open)
		spw_ring_deactivate(r, refcount_read(&g->ref) > 1);
	mutex_unlock(&g->open_lock);
	spw_group_put(g);
}

static int spw_ring_release(struct inode *inode, struct file *file)
{
	spw_ring_close(file->private_data);
	return 0;
}

long spw_ring_open(struct spw_group *g, struct spw_ring_open __user *uarg)
{
	struct spw_ring_open args;
	struct spw_ring *r;
	bool first;
	int fd, i;

	if (copy_from_user(&args, uarg, sizeof(args)))
		return -EFAULT;
	if (args.flags & ~SPW_RING_OPEN_F_ALL)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(args.resv); i++)
		if (args.resv[i])
			return -EINVAL;
	if (args.member >= g->nr)
		return -EINVAL;
	r = &g->rings[args.member];

	/* all the caller learns is known now: a failed copy changes nothing */
	args.ring_entries = g->entries;
	args.nr_members = g->nr;
	args.ring_bytes = spw_ring_bytes(g);
	args.cqes_offset = SPW_CQES_OFFSET;
	args.cqe_size = sizeof(struct spw_cqe);
	if (copy_to_user(uarg, &args, sizeof(args)))
		return -EFAULT;

	mutex_lock(&g->open_lock);
	first = !r->nr_open;
	if (first) {
		fd = spw_ring_prepare(r);
		if (fd)
			goto out;
	}
	/*
	 * The fd is the last thing that can fail. Another thread may close
	 * it as soon as it exists; that release waits for open_lock and then
	 * finds the ring open, as it should.
	 */
	r->nr_open++;
	refcount_inc(&g->ref);
	fd = spw_anon_fd("[spillway-ring]", &spw_ring_fops, r,
			 O_RDWR | (args.flags & SPW_RING_OPEN_F_CLOEXEC ? O_CLOEXEC : 0));
	if (fd < 0) {
		r->nr_open--;
		/* the caller's group file holds another reference */
		refcount_dec(&g->ref);
		if (first)
			spw_ring_unprepare(r);
		goto out;
	}
	if (first)
		spw_ring_publish(r);
out:
	mutex_unlock(&g->open_lock);
	return fd;
}

/* /proc/PID/fdinfo/FD of a ring fd: which group and member it serves. */
static void spw_ring_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct spw_ring *r = file->private_data;

	seq_printf(m, "spw-group-id:\t%llu\nspw-member:\t%u\nspw-owner:\t%u\n",
		   r->group->id, r->idx,
		   READ_ONCE(r->owner) ? READ_ONCE(r->owner_id) : 0);
}

static const struct file_operations spw_ring_fops = {
	.owner		= THIS_MODULE,
	.show_fdinfo	= spw_ring_show_fdinfo,
	.release	= spw_ring_release,
	.flush		= spw_ring_flush,
	.unlocked_ioctl	= spw_ring_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.mmap		= spw_ring_mmap,
	.poll		= spw_ring_poll,
	.uring_cmd	= spw_ring_uring_cmd,
};
