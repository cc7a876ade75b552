// SPDX-License-Identifier: GPL-2.0
/*
 * spw_leak: a module that leaks one allocation at load, on purpose.
 * tests/vm/selftest loads it on a debug kernel to prove that a kernel
 * leak made while a test binary runs fails that binary's leak check
 * (tests/kernel/run-checked scans kmemleak after each binary) and the
 * run. Never loaded outside that check.
 */
#include <linux/module.h>
#include <linux/slab.h>

static int __init spw_leak_init(void)
{
	void *p = kmalloc(96, GFP_KERNEL);

	if (!p)
		return -ENOMEM;
	/* the only pointer to it dies here: kmemleak must report it */
	pr_info("spw_leak: leaked 96 bytes at load\n");
	return 0;
}
module_init(spw_leak_init);

static void __exit spw_leak_exit(void)
{
}
module_exit(spw_leak_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("spillway test aid: leaks one allocation for the vm selftest");
