// SPDX-License-Identifier: GPL-2.0
/*
 * spw_main.c - module init and the /dev/spillway control device.
 */
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/net.h>
#include <linux/sysfs.h>
#include <net/net_namespace.h>
#include <net/sock.h>

#include "spw_internal.h"

/*
 * The callback a fresh TCP socket has. sock_def_readable() is not
 * exported, so we read it off a kernel socket at load time. Only listeners
 * still using it are hooked, and every socket we touch gets it back.
 */
void (*spw_default_data_ready)(struct sock *sk);

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

static int spw_capture_default_data_ready(void)
{
	struct socket *sock;
	int err;

	err = sock_create_kern(&init_net, AF_INET, SOCK_STREAM, IPPROTO_TCP, &sock);
	if (err)
		return err;
	spw_default_data_ready = sock->sk->sk_data_ready;
	sock_release(sock);
	return 0;
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
	BUILD_BUG_ON(sizeof(struct spw_enter) != 24);
	BUILD_BUG_ON(sizeof(struct spw_addr) != 32);
	BUILD_BUG_ON(sizeof(struct spw_cqe) != 80);
	BUILD_BUG_ON(offsetof(struct spw_ring_hdr, tail) != 64);
	BUILD_BUG_ON(offsetof(struct spw_ring_hdr, delivered) != 128);
	BUILD_BUG_ON(SPW_ACCEPT_NONBLOCK != O_NONBLOCK);
	BUILD_BUG_ON(SPW_ACCEPT_CLOEXEC != O_CLOEXEC);
	BUILD_BUG_ON((u64)SPW_MAX_MEMBERS * SPW_MAX_RING_ENTRIES > U32_MAX);
}

static int __init spw_init(void)
{
	int err;

	spw_check_layout();
	err = spw_capture_default_data_ready();
	if (err)
		return err;
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
