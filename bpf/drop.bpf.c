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

/* Identical drops, for the stream's per-flow rate limit. Kernel-side only: not in events.h. */
struct flow_key {
	__u64 location;
	__u32 reason;
	__u32 netns;
	__u32 ifindex;
	__u16 sport;
	__u16 dport;
	__u8 saddr[DT_ADDR_LEN];
	__u8 daddr[DT_ADDR_LEN];
	__u8 l4proto;
	__u8 pad[7];
};

struct flow_state {
	__u64 window_ns; /* start of the current one-second window */
	__u32 emitted;   /* events streamed in this window */
	__u32 suppressed; /* held back since the flow's last event */
};

/* Per-CPU values: no lock, no atomics; the least recently seen flows make room. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
} flows SEC(".maps");

/* The flow this CPU saw last, with its state: a storm of one flow never touches `flows`. */
struct flow_cache {
	struct flow_key key;
	struct flow_state st;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_cache);
} last_flow SEC(".maps");

static __always_inline int same_flow(const struct flow_key *a, const struct flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	__u64 diff = 0;

	for (int i = 0; i < sizeof(*a) / 8; i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

static __always_inline void stat_add(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

/* The IP header and the first 8 bytes past a 40-byte one: one probe read for both layers. */
union l3l4 {
	struct iphdr v4;
	struct ipv6hdr v6;
	__u8 raw[48];
};

/* Reads the IP and L4 headers the skb points at; leaves fields zero where absent.
 * `btf`: the skb is a typed tp_btf pointer, so its fields are plain loads (checked by the
 * verifier, fault-safe) rather than a bpf_probe_read_kernel() each: ~30 ns per read saved on
 * every packet of a storm. The packet bytes themselves still need one probe read. */
static __always_inline void read_headers(struct sk_buff *skb, struct drop_event *e,
					 const bool btf)
{
	unsigned char *head = btf ? skb->head : BPF_CORE_READ(skb, head);
	__u16 nh = btf ? skb->network_header : BPF_CORE_READ(skb, network_header);
	__u16 th = btf ? skb->transport_header : BPF_CORE_READ(skb, transport_header);
	__u16 proto = btf ? skb->protocol : BPF_CORE_READ(skb, protocol);
	union l3l4 h;
	__u32 l4off, hlen;

	e->l3proto = bpf_ntohs(proto);
	if (nh == (__u16)~0U || bpf_probe_read_kernel(&h, sizeof(h), head + nh))
		return;

	if ((h.raw[0] >> 4) == 4) {
		e->family = AF_INET;
		e->l4proto = h.v4.protocol;
		__builtin_memcpy(e->saddr, &h.v4.saddr, 4);
		__builtin_memcpy(e->daddr, &h.v4.daddr, 4);
		if (h.v4.frag_off & bpf_htons(0x1fff))
			return; /* a later fragment: no L4 header */
		hlen = h.v4.ihl * 4;
	} else if ((h.raw[0] >> 4) == 6) {
		e->family = AF_INET6;
		e->l4proto = h.v6.nexthdr;
		__builtin_memcpy(e->saddr, &h.v6.saddr, 16);
		__builtin_memcpy(e->daddr, &h.v6.daddr, 16);
		hlen = sizeof(h.v6);
	} else {
		return;
	}
	l4off = nh + hlen;
	/* Past the IP layer the kernel has set the transport header; trust it there. */
	if (th != (__u16)~0U && th > nh)
		l4off = th;

	if (e->l4proto == IPPROTO_TCP || e->l4proto == IPPROTO_UDP ||
	    e->l4proto == IPPROTO_SCTP || e->l4proto == IPPROTO_ICMP ||
	    e->l4proto == IPPROTO_ICMPV6) {
		__u8 l4[4];

		/* Constant offsets into what was read (the verifier wants them); else read again. */
		if (l4off == nh + 20)
			__builtin_memcpy(l4, &h.raw[20], 4);
		else if (l4off == nh + 40)
			__builtin_memcpy(l4, &h.raw[40], 4);
		else if (bpf_probe_read_kernel(l4, sizeof(l4), head + l4off))
			return;
		if (e->l4proto == IPPROTO_ICMP || e->l4proto == IPPROTO_ICMPV6) {
			e->sport = l4[0]; /* type */
			e->dport = l4[1]; /* code */
		} else {
			e->sport = (__u16)l4[0] << 8 | l4[1];
			e->dport = (__u16)l4[2] << 8 | l4[3];
		}
	}
}

/* An address as ip_filter keys it: IPv4 as ::ffff:a.b.c.d. */
union addr16 {
	__u8 b[DT_ADDR_LEN];
	__u64 w[2];
};

static __always_inline void addr16_of(union addr16 *a, const __u8 *addr, __u8 family)
{
	if (family == AF_INET) {
		a->w[0] = 0;
		a->w[1] = 0;
		a->b[10] = 0xff;
		a->b[11] = 0xff;
		__builtin_memcpy(&a->b[12], addr, 4);
	} else {
		__builtin_memcpy(a->b, addr, 16);
	}
}

static __always_inline int ip_matches(struct dt_config *cfg, const __u8 *addr, __u8 family)
{
	struct ip_key key = { .prefixlen = 128 };
	union addr16 a;

	addr16_of(&a, addr, family);
	if (cfg->filter_ip > DT_NET_FAST) {
		__builtin_memcpy(key.addr, a.b, sizeof(a));
		return bpf_map_lookup_elem(&ip_filter, &key) != NULL;
	}
	/* A pod's few addresses: compared directly, no LPM walk (two per drop: source, dest). */
	for (int i = 0; i < DT_NET_FAST; i++)
		if ((a.w[0] & cfg->mask_hi[i]) == cfg->net_hi[i] &&
		    (a.w[1] & cfg->mask_lo[i]) == cfg->net_lo[i])
			return 1;
	return 0;
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

/* Room for one more event? Checked before any per-flow or ring-buffer work, so a storm the
 * reader cannot keep up with costs two lock-free reads per drop, not a failed reserve. */
static __always_inline int ring_has_room(void)
{
	__u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	__u64 used = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	return used + sizeof(struct drop_event) + 8 <= size; /* 8: the record header */
}

/* Per-flow rate limit of the stream: at most `limit` events per second for identical drops
 * (same place, reason, namespace, interface, addresses, ports) on this CPU. The rest are
 * counted (DT_STAT_SUPPRESSED) and the next event of the flow carries how many. */
static __always_inline int flow_allows(struct drop_event *e, __u32 limit)
{
	struct flow_key k = {
		.location = e->location,
		.reason = e->reason,
		.netns = e->netns,
		.ifindex = e->ifindex,
		.sport = e->sport,
		.dport = e->dport,
		.l4proto = e->l4proto,
	};
	__u32 zero = 0;
	struct flow_cache *c = bpf_map_lookup_elem(&last_flow, &zero);
	struct flow_state *st, *known;

	__builtin_memcpy(k.saddr, e->saddr, DT_ADDR_LEN);
	__builtin_memcpy(k.daddr, e->daddr, DT_ADDR_LEN);
	if (!c)
		return 1;
	st = &c->st;
	if (!same_flow(&c->key, &k)) {
		/* Another flow: park the cached one in the LRU map, fetch this one's state. */
		if (c->key.location || c->key.reason)
			bpf_map_update_elem(&flows, &c->key, st, BPF_ANY);
		known = bpf_map_lookup_elem(&flows, &k);
		__builtin_memcpy(&c->key, &k, sizeof(k));
		if (known) {
			__builtin_memcpy(st, known, sizeof(*st));
		} else {
			st->window_ns = e->ts_ns;
			st->emitted = 0;
			st->suppressed = 0;
		}
	}
	/* Per-CPU state: no other writer. */
	if (e->ts_ns - st->window_ns >= 1000000000ULL) {
		st->window_ns = e->ts_ns;
		st->emitted = 0;
	}
	if (st->emitted >= limit) {
		st->suppressed += 1;
		stat_add(DT_STAT_SUPPRESSED);
		return 0;
	}
	st->emitted += 1;
	e->suppressed = st->suppressed;
	st->suppressed = 0;
	return 1;
}

/* The time of the drop, read only for a drop that is kept or streamed: in a storm the reader
 * cannot keep up with most drops are only counted, and a clock read is not free on a VM. */
static __always_inline void stamp(struct drop_event *ev)
{
	if (!ev->ts_ns)
		ev->ts_ns = bpf_ktime_get_ns();
}

/* Record, then stream (room, per-flow limit); also called by the cause hooks for a drop
 * that waited for nf_hook_slow's return. */
static __always_inline void emit(struct dt_config *cfg, struct drop_event *ev)
{
	struct drop_event *out;

	if (cfg->record_slots) {
		stamp(ev);
		record(ev, cfg->record_slots);
	}
	if (cfg->stream_off)
		return;
	if (!ring_has_room()) {
		stat_add(DT_STAT_LOST);
		return;
	}
	stamp(ev);
	if (cfg->flow_limit && !flow_allows(ev, cfg->flow_limit))
		return;
	out = bpf_ringbuf_reserve(&events, sizeof(*out), 0);
	if (!out) {
		stat_add(DT_STAT_LOST);
		return;
	}
	__builtin_memcpy(out, ev, sizeof(*ev));
	/* No wake-up per event: the reader polls with a short timeout and drains in batches. */
	bpf_ringbuf_submit(out, BPF_RB_NO_WAKEUP);
}

#include "cause.bpf.h"

/* Whether the drop's namespace is one the filter wants. A handful are compared directly:
 * a --netns session rejects almost every drop here, and a hash lookup would cost more than
 * the rest of its path together. */
static __always_inline int netns_wanted(struct dt_config *cfg, __u32 netns)
{
	if (cfg->filter_netns > DT_NETNS_FAST)
		return bpf_map_lookup_elem(&netns_filter, &netns) != NULL;
	for (int i = 0; i < DT_NETNS_FAST; i++)
		if (cfg->netns[i] == netns)
			return 1;
	return 0;
}

/* A drop every filter let through: read its headers (for the IP filter too), count it,
 * stream or record it. The event is built only here, so a rejected drop never pays for it. */
static __always_inline int matched(struct dt_config *cfg, struct sk_buff *skb, __u64 location,
				   __u32 reason, __u32 netns, __u32 ifindex, __u8 cause,
				   const bool btf)
{
	struct drop_event ev = {};

	read_headers(skb, &ev, btf);
	if (cfg->filter_ip && !(ev.family && (ip_matches(cfg, ev.saddr, ev.family) ||
					      ip_matches(cfg, ev.daddr, ev.family))))
		return 0;

	ev.location = location;
	ev.reason = reason;
	ev.netns = netns;
	ev.ifindex = ifindex;
	ev.cause = cause;
	ev.len = btf ? skb->len : BPF_CORE_READ(skb, len);
	ev.mark = btf ? skb->mark : BPF_CORE_READ(skb, mark);
	ev.hook = DT_HOOK_KFREE_SKB;
	count(&ev);
	/* nf_hook_slow frees the skb before it returns: its return completes the event. */
	if (cfg->cause_on[DT_CAUSE_NETFILTER] && location >= cfg->nf_lo && location < cfg->nf_hi)
		return park((__u64)skb, &ev);
	emit(cfg, &ev);
	return 0;
}

/* The filters, cheapest and most discriminating first, on plain values: a drop they reject
 * costs a few loads and compares (a filtered-out drop is not counted either). */
static __always_inline int handle(struct sk_buff *skb, __u64 location, __u32 reason,
				  const bool btf)
{
	__u32 zero = 0, netns = 0, ifindex = 0;
	struct dt_config *cfg = bpf_map_lookup_elem(&dt_config_map, &zero);
	struct net_device *dev;
	struct sock *sk = NULL;
	__u8 cause = 0;

	if (!cfg || !skb)
		return 0;
	/* Before the filters, so a hint never outlives its skb (whose address is reused). */
	if (cfg->cause_on[DT_CAUSE_RPFILTER])
		cause = take_rp_hint((__u64)skb);

	/* Where it was dropped: its device's namespace, else its socket's. */
	dev = btf ? skb->dev : BPF_CORE_READ(skb, dev);
	if (dev) {
		netns = btf ? dev->nd_net.net->ns.inum : BPF_CORE_READ(dev, nd_net.net, ns.inum);
	} else {
		sk = btf ? skb->sk : BPF_CORE_READ(skb, sk);
		if (sk)
			netns = btf ? sk->__sk_common.skc_net.net->ns.inum
				    : BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	if (cfg->filter_netns && !netns_wanted(cfg, netns))
		return 0;
	if (cfg->filter_reason && !bpf_map_lookup_elem(&reason_filter, &reason))
		return 0;

	/* The device, else the socket's bound device, else the one it came in on. */
	if (dev)
		ifindex = btf ? dev->ifindex : BPF_CORE_READ(dev, ifindex);
	else if (sk)
		ifindex = btf ? sk->__sk_common.skc_bound_dev_if
			      : BPF_CORE_READ(sk, __sk_common.skc_bound_dev_if);
	if (!ifindex)
		ifindex = btf ? skb->skb_iif : BPF_CORE_READ(skb, skb_iif);
	if (cfg->ifindex && cfg->ifindex != ifindex)
		return 0;
	if (ignored(cfg, location))
		return 0;
	return matched(cfg, skb, location, reason, netns, ifindex, cause, btf);
}

/* Kernels before 5.17 pass no reason: the existence check turns the read into dead code
 * the verifier never sees, so the same object loads there. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb_btf, struct sk_buff *skb, void *location)
{
	__u32 reason = 0;

	if (bpf_core_type_exists(enum skb_drop_reason))
		reason = (__u32)ctx[2];
	return handle(skb, (__u64)location, reason, true);
}

SEC("raw_tp/kfree_skb")
int kfree_skb_raw(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 reason = 0;

	if (bpf_core_type_exists(enum skb_drop_reason))
		reason = (__u32)ctx->args[2];
	return handle((struct sk_buff *)ctx->args[0], ctx->args[1], reason, false);
}

SEC("tracepoint/skb/kfree_skb")
int kfree_skb_tp(struct trace_event_raw_kfree_skb *args)
{
	__u32 reason = 0;

	if (bpf_core_field_exists(args->reason))
		reason = (__u32)args->reason;
	return handle((struct sk_buff *)args->skbaddr, (__u64)args->location, reason, false);
}
