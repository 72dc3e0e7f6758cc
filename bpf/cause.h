/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Where the kfree_skb program meets the cause hooks of kernels whose kfree_skb carries no
 * reason (before 5.17): the hint and the parked drop they pass each other, and the two
 * helpers kfree_skb calls. The hooks themselves are tracer/causes/cause.bpf.c; the maps
 * declared here are defined in maps.bpf.c.
 */
#ifndef DROPTRACE_CAUSE_H
#define DROPTRACE_CAUSE_H

#include "dt.h"

/* fib_validate_source returned -EXDEV for this skb; kfree_skb takes it. */
struct dt_rp_hint_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};
extern struct dt_rp_hint_map rp_hint SEC(".maps");

/* A drop inside nf_hook_slow, waiting for its return to learn the hook and family; with
 * capture on, its packet bytes are taken when it is parked (the skb is freed before the
 * return), so a parked drop pays for them even if it is then not streamed. */
struct dt_pending {
	__u64 skb;
	struct drop_event ev;
	struct drop_packet pkt;
};

struct dt_nf_pending_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dt_pending);
};
extern struct dt_nf_pending_map nf_pending SEC(".maps");

/* DT_HOOK_RPFILTER if fib_validate_source failed for this skb, else 0. */
static __always_inline __u8 take_rp_hint(__u64 skb)
{
	__u32 zero = 0;
	__u64 *hint = bpf_map_lookup_elem(&rp_hint, &zero);

	if (hint && *hint == skb) {
		*hint = 0;
		return DT_HOOK_RPFILTER;
	}
	return 0;
}

/* Holds a drop inside nf_hook_slow until its return (cause.bpf.c) completes and emits it. */
static __always_inline int park(__u64 skb, struct drop_event *ev, const struct dt_bytes *b)
{
	__u32 zero = 0;
	struct dt_config *cfg = bpf_map_lookup_elem(&dt_config_map, &zero);
	struct dt_pending *p = bpf_map_lookup_elem(&nf_pending, &zero);

	if (!p || !cfg) {
		if (cfg)
			emit(cfg, ev, b);
		return 0;
	}
	if (p->skb) { /* its return was missed (a migrated task): send it as it is */
		struct dt_bytes parked = { .copy = &p->pkt };

		emit(cfg, &p->ev, &parked);
	}
	stamp(ev); /* now, not when nf_hook_slow returns */
	p->skb = skb;
	__builtin_memcpy(&p->ev, ev, sizeof(*ev));
	if (cfg->capture_len)
		capture(&p->pkt, b, cfg->capture_len);
	else
		p->pkt.caplen = 0;
	return 0;
}

#endif
