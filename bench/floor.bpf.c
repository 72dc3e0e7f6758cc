// SPDX-License-Identifier: GPL-2.0
/* The bench's floor: an empty program on droptrace's hook (tp_btf/kfree_skb). What it costs
 * is what any program there costs, the tracepoint's own dispatch: the least a filtered
 * droptrace can cost. */
#include "vmlinux.h" /* build/, from `make bpf` */
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/kfree_skb")
int kfree_skb_floor(void *ctx)
{
	return 0;
}
