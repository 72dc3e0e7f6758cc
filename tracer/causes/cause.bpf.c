// SPDX-License-Identifier: GPL-2.0
/*
 * Why a packet was dropped, on kernels whose kfree_skb carries no reason (before 5.17):
 * the return of the function that decided it. Linked into one object with bpf/drop.bpf.c,
 * whose kfree_skb program takes what these hooks leave (bpf/cause.h), and whose maps and
 * event helpers they share (bpf/dt.h).
 *
 * Each hook has an fexit program and a kprobe+kretprobe pair; user space attaches the first
 * the kernel allows (fexit needs BTF trampolines; x86 trampolines take at most 6 arguments
 * before 6.6, and fib_validate_source has 8). Hints live in per-CPU slots: the drop and
 * the decision happen on one CPU within one call chain.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "dt.h"
#include "cause.h"

#define DT_EXDEV 18 /* __fib_validate_source's "reverse path check failed" */
#define DT_STACK 4  /* nested calls a kprobe stash follows (REJECT re-enters nf_hook_slow) */

/* Arguments a kprobe saw, for its kretprobe (which sees only the return value). */
struct dt_stash {
	__u64 skb[DT_STACK];
	__u8 hook[DT_STACK];
	__u8 pf[DT_STACK];
	__u32 depth;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2); /* DT_CAUSE_RPFILTER, DT_CAUSE_NETFILTER */
	__type(key, __u32);
	__type(value, struct dt_stash);
} cause_stash SEC(".maps");

static __always_inline void rp_return(__u64 skb, int ret)
{
	__u32 zero = 0;
	__u64 *hint;

	if (ret != -DT_EXDEV)
		return;
	hint = bpf_map_lookup_elem(&rp_hint, &zero);
	if (hint)
		*hint = skb;
}

static __always_inline void nf_return(__u64 skb, __u8 hook, __u8 pf, int ret)
{
	__u32 zero = 0;
	struct dt_config *cfg = bpf_map_lookup_elem(&dt_config_map, &zero);
	struct dt_pending *p = bpf_map_lookup_elem(&nf_pending, &zero);
	struct dt_bytes parked = {};

	if (!p || !cfg || !p->skb || p->skb != skb)
		return;
	parked.copy = &p->pkt;
	if (ret < 0) { /* NF_DROP: -EPERM unless the rule gave an errno */
		p->ev.cause = DT_HOOK_NETFILTER;
		p->ev.nf_hook = hook;
		p->ev.nf_pf = pf;
	}
	emit(cfg, &p->ev, &parked);
	p->skb = 0;
}

static __always_inline void stash_push(__u32 which, __u64 skb, __u8 hook, __u8 pf)
{
	struct dt_stash *s = bpf_map_lookup_elem(&cause_stash, &which);
	__u32 d;

	if (!s)
		return;
	d = s->depth;
	if (d < DT_STACK) {
		s->skb[d & (DT_STACK - 1)] = skb;
		s->hook[d & (DT_STACK - 1)] = hook;
		s->pf[d & (DT_STACK - 1)] = pf;
	}
	s->depth = d + 1;
}

/* Pops the newest stash entry into *skb, *hook, *pf; 0 if there was one. */
static __always_inline int stash_pop(__u32 which, __u64 *skb, __u8 *hook, __u8 *pf)
{
	struct dt_stash *s = bpf_map_lookup_elem(&cause_stash, &which);
	__u32 d;

	if (!s || !s->depth)
		return -1;
	d = --s->depth;
	if (d >= DT_STACK)
		return -1;
	*skb = s->skb[d & (DT_STACK - 1)];
	*hook = s->hook[d & (DT_STACK - 1)];
	*pf = s->pf[d & (DT_STACK - 1)];
	return 0;
}

SEC("fexit/fib_validate_source")
int BPF_PROG(dt_rp_fexit, struct sk_buff *skb, __be32 src, __be32 dst, __u8 tos, int oif,
	     struct net_device *dev, struct in_device *idev, __u32 *itag, int ret)
{
	rp_return((__u64)skb, ret);
	return 0;
}

SEC("kprobe/fib_validate_source")
int BPF_KPROBE(dt_rp_kprobe, struct sk_buff *skb)
{
	stash_push(DT_CAUSE_RPFILTER, (__u64)skb, 0, 0);
	return 0;
}

SEC("kretprobe/fib_validate_source")
int BPF_KRETPROBE(dt_rp_kretprobe, int ret)
{
	__u64 skb;
	__u8 hook, pf;

	if (!stash_pop(DT_CAUSE_RPFILTER, &skb, &hook, &pf))
		rp_return(skb, ret);
	return 0;
}

SEC("fexit/nf_hook_slow")
int BPF_PROG(dt_nf_fexit, struct sk_buff *skb, struct nf_hook_state *state,
	     const struct nf_hook_entries *e, unsigned int s, int ret)
{
	nf_return((__u64)skb, BPF_CORE_READ(state, hook), BPF_CORE_READ(state, pf), ret);
	return 0;
}

SEC("kprobe/nf_hook_slow")
int BPF_KPROBE(dt_nf_kprobe, struct sk_buff *skb, struct nf_hook_state *state)
{
	stash_push(DT_CAUSE_NETFILTER, (__u64)skb, BPF_CORE_READ(state, hook),
		   BPF_CORE_READ(state, pf));
	return 0;
}

SEC("kretprobe/nf_hook_slow")
int BPF_KRETPROBE(dt_nf_kretprobe, int ret)
{
	__u64 skb;
	__u8 hook, pf;

	if (!stash_pop(DT_CAUSE_NETFILTER, &skb, &hook, &pf))
		nf_return(skb, hook, pf, ret);
	return 0;
}
