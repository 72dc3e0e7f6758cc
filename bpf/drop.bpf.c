// SPDX-License-Identifier: GPL-2.0
/*
 * kfree_skb: every packet the kernel frees as dropped, with its reason and location.
 * Three entry points for the same handler; user space loads the first the kernel accepts:
 * tp_btf (typed, 5.5+), raw_tp (4.17+), and the classic tracepoint.
 * cause.bpf.h adds the hooks that name a drop where kfree_skb gives no reason (before 5.17).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "events.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_ICMPV6 58

char LICENSE[] SEC("license") = "GPL";

/* Makes the event layout part of the object's BTF, where user space checks it. */
const struct drop_event *dt_event_layout __attribute__((unused));
const struct counter_key *dt_counter_layout __attribute__((unused));
const struct dt_config *dt_config_layout __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct counter_key);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DT_STAT_NR);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dt_config);
} dt_config_map SEC(".maps");

/* Flight recorder: a ring of slots per CPU, overwriting the oldest. Per CPU because a
 * shared ring would need an atomic fetch-and-add, which 5.10 kernels lack; the newest N
 * drops overall are always within the union of each CPU's newest N. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024); /* resized from user space before load */
	__type(key, __u32);
	__type(value, struct drop_event);
} recorder SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} rec_head SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} netns_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u8);
} reason_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ip_key);
	__type(value, __u8);
} ip_filter SEC(".maps");

static __always_inline void stat_add(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

/* Reads the IP and L4 headers the skb points at; leaves fields zero where absent. */
static __always_inline void read_headers(struct sk_buff *skb, struct drop_event *e)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 first;
	__u32 l4off;

	e->l3proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	if (nh == (__u16)~0U || bpf_probe_read_kernel(&first, 1, head + nh))
		return;

	if ((first >> 4) == 4) {
		struct iphdr iph;

		if (bpf_probe_read_kernel(&iph, sizeof(iph), head + nh))
			return;
		e->family = AF_INET;
		e->l4proto = iph.protocol;
		__builtin_memcpy(e->saddr, &iph.saddr, 4);
		__builtin_memcpy(e->daddr, &iph.daddr, 4);
		if (iph.frag_off & bpf_htons(0x1fff))
			return; /* a later fragment: no L4 header */
		l4off = nh + iph.ihl * 4;
	} else if ((first >> 4) == 6) {
		struct ipv6hdr ip6h;

		if (bpf_probe_read_kernel(&ip6h, sizeof(ip6h), head + nh))
			return;
		e->family = AF_INET6;
		e->l4proto = ip6h.nexthdr;
		__builtin_memcpy(e->saddr, &ip6h.saddr, 16);
		__builtin_memcpy(e->daddr, &ip6h.daddr, 16);
		l4off = nh + sizeof(ip6h);
	} else {
		return;
	}
	/* Past the IP layer the kernel has set the transport header; trust it there. */
	if (th != (__u16)~0U && th > nh)
		l4off = th;

	if (e->l4proto == IPPROTO_TCP || e->l4proto == IPPROTO_UDP ||
	    e->l4proto == IPPROTO_SCTP) {
		__be16 ports[2];

		if (!bpf_probe_read_kernel(ports, sizeof(ports), head + l4off)) {
			e->sport = bpf_ntohs(ports[0]);
			e->dport = bpf_ntohs(ports[1]);
		}
	} else if (e->l4proto == IPPROTO_ICMP || e->l4proto == IPPROTO_ICMPV6) {
		__u8 tc[2];

		if (!bpf_probe_read_kernel(tc, sizeof(tc), head + l4off)) {
			e->sport = tc[0];
			e->dport = tc[1];
		}
	}
}

static __always_inline int ip_matches(const __u8 *addr, __u8 family)
{
	struct ip_key key = { .prefixlen = 128 };

	if (family == AF_INET) {
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], addr, 4);
	} else {
		__builtin_memcpy(key.addr, addr, 16);
	}
	return bpf_map_lookup_elem(&ip_filter, &key) != NULL;
}

static __always_inline void count(struct drop_event *e)
{
	struct counter_key key = {
		.location = e->location,
		.reason = e->reason,
		.ifindex = e->ifindex,
		.netns = e->netns,
	};
	__u64 one = 1, *v;

	stat_add(DT_STAT_MATCHED);
	v = bpf_map_lookup_elem(&counters, &key);
	if (v) {
		*v += 1; /* per-CPU value: no other writer */
		return;
	}
	if (bpf_map_update_elem(&counters, &key, &one, BPF_NOEXIST)) {
		/* Raced with our own CPU's earlier insert, or the map is full. */
		v = bpf_map_lookup_elem(&counters, &key);
		if (v)
			*v += 1;
		else
			stat_add(DT_STAT_UNCOUNTED);
	}
}

static __always_inline void record(struct drop_event *e, __u32 slots)
{
	__u32 zero = 0, slot;
	__u64 *head = bpf_map_lookup_elem(&rec_head, &zero);
	struct drop_event *s;

	if (!head)
		return;
	slot = *head % slots;
	*head += 1; /* per-CPU: no other writer */
	s = bpf_map_lookup_elem(&recorder, &slot);
	if (s)
		__builtin_memcpy(s, e, sizeof(*e));
}

static __always_inline int ignored(struct dt_config *cfg, __u64 location)
{
	for (int i = 0; i < DT_IGNORE_NR; i++)
		if (location >= cfg->ignore_lo[i] && location < cfg->ignore_hi[i])
			return 1;
	return 0;
}

static __always_inline void emit(struct dt_config *cfg, struct drop_event *ev)
{
	struct drop_event *out;

	if (cfg->record_slots)
		record(ev, cfg->record_slots);
	if (cfg->stream_off)
		return;
	out = bpf_ringbuf_reserve(&events, sizeof(*out), 0);
	if (!out) {
		stat_add(DT_STAT_LOST);
		return;
	}
	__builtin_memcpy(out, ev, sizeof(*ev));
	bpf_ringbuf_submit(out, 0);
}

#include "cause.bpf.h"

static __always_inline int handle(struct sk_buff *skb, __u64 location, __u32 reason)
{
	__u32 zero = 0;
	struct dt_config *cfg = bpf_map_lookup_elem(&dt_config_map, &zero);
	struct net_device *dev;
	struct drop_event ev = {};

	if (!cfg || !skb || ignored(cfg, location))
		return 0;
	/* Before the filters, so a hint never outlives its skb (whose address is reused). */
	if (cfg->cause_on[DT_CAUSE_RPFILTER])
		take_rp_hint((__u64)skb, &ev);

	dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		ev.netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
		ev.ifindex = BPF_CORE_READ(dev, ifindex);
	} else {
		struct sock *sk = BPF_CORE_READ(skb, sk);

		if (sk) {
			ev.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
			ev.ifindex = BPF_CORE_READ(sk, __sk_common.skc_bound_dev_if);
		}
	}
	if (!ev.ifindex)
		ev.ifindex = BPF_CORE_READ(skb, skb_iif);

	/* Cheapest filters first, before touching packet data. */
	if (cfg->filter_netns && !bpf_map_lookup_elem(&netns_filter, &ev.netns))
		return 0;
	if (cfg->ifindex && cfg->ifindex != ev.ifindex)
		return 0;
	if (cfg->filter_reason && !bpf_map_lookup_elem(&reason_filter, &reason))
		return 0;

	read_headers(skb, &ev);
	if (cfg->filter_ip && !(ev.family && (ip_matches(ev.saddr, ev.family) ||
					      ip_matches(ev.daddr, ev.family))))
		return 0;

	ev.ts_ns = bpf_ktime_get_ns();
	ev.location = location;
	ev.reason = reason;
	ev.len = BPF_CORE_READ(skb, len);
	ev.mark = BPF_CORE_READ(skb, mark);
	ev.hook = DT_HOOK_KFREE_SKB;
	count(&ev);
	/* nf_hook_slow frees the skb before it returns: its return completes the event. */
	if (cfg->cause_on[DT_CAUSE_NETFILTER] && location >= cfg->nf_lo && location < cfg->nf_hi)
		return park((__u64)skb, &ev);
	emit(cfg, &ev);
	return 0;
}

/* Kernels before 5.17 pass no reason: the existence check turns the read into dead code
 * the verifier never sees, so the same object loads there. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb_btf, struct sk_buff *skb, void *location)
{
	__u32 reason = 0;

	if (bpf_core_type_exists(enum skb_drop_reason))
		reason = (__u32)ctx[2];
	return handle(skb, (__u64)location, reason);
}

SEC("raw_tp/kfree_skb")
int kfree_skb_raw(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 reason = 0;

	if (bpf_core_type_exists(enum skb_drop_reason))
		reason = (__u32)ctx->args[2];
	return handle((struct sk_buff *)ctx->args[0], ctx->args[1], reason);
}

SEC("tracepoint/skb/kfree_skb")
int kfree_skb_tp(struct trace_event_raw_kfree_skb *args)
{
	__u32 reason = 0;

	if (bpf_core_field_exists(args->reason))
		reason = (__u32)args->reason;
	return handle((struct sk_buff *)args->skbaddr, (__u64)args->location, reason);
}
