// SPDX-License-Identifier: GPL-2.0
/*
 * spw_main.c - module init and the /dev/spillway control device.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/hashtable.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/net.h>
#include <linux/sysfs.h>
#include <net/net_namespace.h>
#include <net/sock.h>

#include "spw_internal.h"

/*
 * Groups allocated and not yet freed, readable (never writable) as
 * /sys/module/spillway/parameters/live_groups: tests check it returns to
 * zero, which means every group, ring and token array was freed.
 */
atomic_t spw_live_groups = ATOMIC_INIT(0);

static int spw_live_groups_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", atomic_read(&spw_live_groups));
}

static const struct kernel_param_ops spw_live_groups_ops = {
	.get = spw_live_groups_get,
};
module_param_cb(live_groups, &spw_live_groups_ops, NULL, 0444);
MODULE_PARM_DESC(live_groups, "groups currently allocated (read-only)");

/*
 * Which sockets are members of a live group, so one socket never joins
 * two (each would place tokens for the same accept queue). Keyed by the
 * struct sock; the module writes nothing into the socket itself.
 */
static DEFINE_HASHTABLE(spw_registry, 8);
static DEFINE_MUTEX(spw_registry_lock);

int spw_registry_add(struct spw_member *m)
{
	struct sock *sk = m->sock->sk;
	struct spw_member *o;
	int err = 0;

	mutex_lock(&spw_registry_lock);
	hash_for_each_possible(spw_registry, o, registry, (unsigned long)sk)
		if (o->sock->sk == sk) {
			err = -EBUSY;
			goto out;
		}
	hash_add(spw_registry, &m->registry, (unsigned long)sk);
	m->registered = true;
out:
	mutex_unlock(&spw_registry_lock);
	return err;
}

void spw_registry_del(struct spw_member *m)
{
	if (!m->registered)
		return;
	mutex_lock(&spw_registry_lock);
	hash_del(&m->registry);
	m->registered = false;
	mutex_unlock(&spw_registry_lock);
}

/*
 * An fd for a new group or ring file on its own inode, so that security
 * modules see and can label it (security_inode_init_security_anon()).
 * The fd is installed when this returns: callers finish every step that
 * can fail first. 6.6 replaced anon_inode_getfd_secure() with
 * anon_inode_create_getfile(), which leaves the install to us.
 */
int spw_anon_fd(const char *name, const struct file_operations *fops,
		void *priv, int flags)
{
#ifdef SPW_HAVE_ANON_INODE_CREATE_GETFILE
	struct file *file;
	int fd;

	fd = get_unused_fd_flags(flags);
	if (fd < 0)
		return fd;
	file = anon_inode_create_getfile(name, fops, priv, flags, NULL);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		return PTR_ERR(file);
	}
	fd_install(fd, file);
	return fd;
#else
	return anon_inode_getfd_secure(name, fops, priv, flags, NULL);
#endif
}

static long spw_ctl_ioctl(struct file *file, unsigned int cmd,
			  unsigned long arg)
{
	switch (cmd) {
	case SPW_IOC_GROUP_CREATE:
		return spw_group_create((void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations spw_ctl_fops = {
	.owner		= THIS_MODULE,
	.unlocked_ioctl	= spw_ctl_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
};

static struct miscdevice spw_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "spillway",
	.fops	= &spw_ctl_fops,
	/* like /dev/net/tun: callers can only register sockets they hold */
	.mode	= 0666,
};

static void spw_check_layout(void)
{
	BUILD_BUG_ON(sizeof(struct spw_group_create) != 40);
	BUILD_BUG_ON(sizeof(struct spw_ring_open) != 40);
	BUILD_BUG_ON(sizeof(struct spw_enter) != 32);
	BUILD_BUG_ON(sizeof(struct spw_addr) != 32);
	/* one cache line (ABI 5) */
	BUILD_BUG_ON(sizeof(struct spw_cqe) != 64);
	BUILD_BUG_ON(offsetof(struct spw_ring_hdr, served) + sizeof(struct spw_addr) >
		     offsetof(struct spw_ring_hdr, delivered));
	BUILD_BUG_ON(SPW_KIND_ORIGIN != SPW_POLICY_ORIGIN);
	BUILD_BUG_ON(SPW_KIND_LEAST != SPW_POLICY_LEAST);
	BUILD_BUG_ON(SPW_KIND_P2C != SPW_POLICY_P2C);
	BUILD_BUG_ON(SPW_KIND_CPU != SPW_POLICY_CPU);
	BUILD_BUG_ON(offsetof(struct spw_ring_hdr, tail) != 64);
	BUILD_BUG_ON(offsetof(struct spw_ring_hdr, delivered) != 128);
	BUILD_BUG_ON(offsetof(struct spw_ring_hdr, owner) >= 128);
	BUILD_BUG_ON((u64)SPW_MAX_MEMBERS * SPW_MAX_RING_ENTRIES > U32_MAX);
}

static int __init spw_init(void)
{
	int err;

	spw_check_layout();
	err = misc_register(&spw_misc);
	if (err)
		return err;
	pr_info("loaded, abi %d\n", SPW_ABI_VERSION);
	return 0;
}

static void __exit spw_exit(void)
{
	misc_deregister(&spw_misc);
	pr_info("unloaded\n");
}

module_init(spw_init);
module_exit(spw_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("spillway: accept groups with per-worker completion rings");
MODULE_AUTHOR("spillway developers");
MODULE_VERSION("0.1");
