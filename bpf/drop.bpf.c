// SPDX-License-Identifier: GPL-2.0
/*
 * kfree_skb: every packet the kernel frees as dropped, with its reason and location.
 * Three entry points for the same handler; user space loads the first the kernel accepts:
 * tp_btf (typed, 5.5+), raw_tp (4.17+), and the classic tracepoint.
 * tracer/causes/cause.bpf.c holds the hooks that name a drop where kfree_skb gives no reason
 * (before 5.17); the Makefile links both into one object with the maps they share
 * (bpf/maps.bpf.c).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "events.h"
#include "dt.h"
#include "cause.h"

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
const struct drop_packet *dt_packet_layout __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct counter_key);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DT_SLOTS);
	__type(key, __u32);
	__type(value, struct counter_slot);
} counter_slots SEC(".maps");

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

/* The IP header and the first 8 bytes past a 40-byte one: one probe read for both layers. */
union l3l4 {
	struct iphdr v4;
	struct ipv6hdr v6;
	__u8 raw[48];
};

/* Reads the IP and L4 headers the skb points at; leaves fields zero where absent, and
 * where the network header is in `b` (for a capture, if the drop is kept).
 * `btf`: the skb is a typed tp_btf pointer, so its fields are plain loads (checked by the
 * verifier, fault-safe) rather than a bpf_probe_read_kernel() each: ~30 ns per read saved on
 * every packet of a storm. The packet bytes themselves still need one probe read. */
static __always_inline void read_headers(struct sk_buff *skb, struct drop_event *e,
					 struct dt_bytes *b, const bool btf)
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
	b->from = head + nh;

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

/* A fresh event and packet reference, and the headers read into them. */
static __always_inline void read_packet(struct sk_buff *skb, struct drop_event *e,
					struct dt_bytes *b, const bool btf)
{
	__builtin_memset(e, 0, sizeof(*e));
	__builtin_memset(b, 0, sizeof(*b));
	read_headers(skb, e, b, btf);
}

/* Conntrack's types, as much of them as is read here: nf_conntrack may be a module (its
 * types then in its own BTF, found by CO-RE) or absent, and the build host's vmlinux.h need
 * not have them. The ___dt suffix makes them CO-RE's view of the kernel's own. */
struct sk_buff___dt {
	unsigned long _nfct;
} __attribute__((preserve_access_index));

union nf_inet_addr___dt {
	__u32 all[4];
};

struct nf_conntrack_tuple___dt {
	struct {
		union nf_inet_addr___dt u3;
		union {
			__be16 all;
		} u;
	} dst;
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple_hash___dt {
	struct nf_conntrack_tuple___dt tuple;
} __attribute__((preserve_access_index));

struct nf_conn___dt {
	struct nf_conntrack_tuple_hash___dt tuplehash[2];
} __attribute__((preserve_access_index));

#define DT_NFCT_INFOMASK 7UL /* skb->_nfct: the entry's pointer, ctinfo in the low 3 bits */
#define DT_IP_CT_ESTABLISHED 0 /* enum ip_conntrack_info, original direction */
#define DT_IP_CT_NEW 2

/* Where the packet was sent before a DNAT rewrote its destination: the original direction
 * of the conntrack entry it still carries. A first packet dropped after a service's DNAT
 * (a policy in FORWARD) has an entry that was never confirmed, gone with the skb: no
 * conntrack request from user space can find it afterwards. Only for a drop that is
 * streamed or recorded; on a kernel without conntrack's BTF (5.10's modules) a dead branch. */
static __always_inline void read_dnat_origin(struct sk_buff *skb, struct drop_event *e)
{
	struct sk_buff___dt *s = (void *)skb;
	struct nf_conn___dt *ct;
	__u8 dst[DT_ADDR_LEN] = {};
	__be16 port = 0;
	unsigned long nfct;
	__u32 n;

	if (!bpf_core_type_exists(struct nf_conn___dt) || !bpf_core_field_exists(s->_nfct))
		return;
	if (e->family != AF_INET && e->family != AF_INET6)
		return;
	nfct = BPF_CORE_READ(s, _nfct);
	/* Only a packet of the original direction: a reply's or an ICMP error's entry has
	 * another packet's destination there. */
	if ((nfct & DT_NFCT_INFOMASK) != DT_IP_CT_NEW &&
	    (nfct & DT_NFCT_INFOMASK) != DT_IP_CT_ESTABLISHED)
		return;
	ct = (void *)(nfct & ~DT_NFCT_INFOMASK);
	if (!ct || bpf_core_read(dst, sizeof(dst), &ct->tuplehash[0].tuple.dst.u3))
		return;
	if (e->l4proto == IPPROTO_TCP || e->l4proto == IPPROTO_UDP || e->l4proto == IPPROTO_SCTP)
		bpf_core_read(&port, sizeof(port), &ct->tuplehash[0].tuple.dst.u.all);
	n = e->family == AF_INET ? 4 : DT_ADDR_LEN;
	for (__u32 i = 0; i < DT_ADDR_LEN; i++)
		if (i < n && dst[i] != e->daddr[i])
			e->orig_set = 1;
	if (port && bpf_ntohs(port) != e->dport)
		e->orig_set = 1;
	if (!e->orig_set)
		return;
	__builtin_memcpy(e->orig_daddr, dst, DT_ADDR_LEN);
	e->orig_dport = bpf_ntohs(port);
}

/* How many bytes from the network header are in the skb's linear data (the rest is in
 * pages, which are not read): the linear length counts from skb->data, which is before the
 * network header at L2 and past it once the IP layer has pulled its header. */
static __always_inline __u32 linear_from_nh(struct sk_buff *skb, const void *nh, __u32 len,
					    const bool btf)
{
	__u32 data_len = btf ? skb->data_len : BPF_CORE_READ(skb, data_len);
	unsigned char *data = btf ? skb->data : BPF_CORE_READ(skb, data);
	long avail = (long)(len - data_len) + ((long)data - (long)nh);

	if (avail <= 0 || data_len > len)
		return 0;
	return avail > DT_CAPTURE_LEN ? DT_CAPTURE_LEN : avail;
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

/* Which slot of counter_slots a cause has: a multiplicative hash of its key. */
static __always_inline __u32 slot_of(__u64 location, __u32 reason, __u32 ifindex, __u32 netns)
{
	__u64 h = location ^ ((__u64)reason << 32) ^ ((__u64)ifindex << 16) ^ netns;

	h *= 0x9E3779B97F4A7C15ULL;
	return (__u32)(h >> 32) & (DT_SLOTS - 1);
}

/* Counts a drop; returns its cause's slot on this CPU, or NULL when another cause holds that
 * slot here and the drop was counted in the `counters` hash instead. */
static __always_inline struct counter_slot *count(__u64 location, __u32 reason, __u32 ifindex,
						  __u32 netns)
{
	struct counter_key key = {
		.location = location,
		.reason = reason,
		.ifindex = ifindex,
		.netns = netns,
	};
	__u32 idx = slot_of(location, reason, ifindex, netns);
	struct counter_slot *s = bpf_map_lookup_elem(&counter_slots, &idx);
	__u64 one = 1, *v;

	/* Per-CPU values: no other writer. */
	if (s && s->used && s->location == location && s->reason == reason &&
	    s->ifindex == ifindex && s->netns == netns) {
		s->count += 1;
		return s;
	}
	if (s && !s->used) {
		s->location = location;
		s->reason = reason;
		s->ifindex = ifindex;
		s->netns = netns;
		s->count = 1;
		s->window = 0;
		s->passed = 0;
		s->held = 0;
		/* The key before `used`, for a reader on another CPU (x86 keeps store order). */
		asm volatile("" ::: "memory");
		s->used = 1;
		return s;
	}
	v = bpf_map_lookup_elem(&counters, &key);
	if (v) {
		*v += 1;
		return NULL;
	}
	if (bpf_map_update_elem(&counters, &key, &one, BPF_NOEXIST)) {
		/* Raced with our own CPU's earlier insert, or the map is full. */
		v = bpf_map_lookup_elem(&counters, &key);
		if (v)
			*v += 1;
		else
			stat_add(DT_STAT_UNCOUNTED);
	}
	return NULL;
}

/* The per-cause gate: at most `limit` drops of one cause per second on this CPU go on to be
 * recorded or streamed; the rest are counted only (as held). In a storm this is
 * where almost every drop stops: before its headers are read or an event is built. */
static __always_inline int cause_allows(struct dt_config *cfg, struct counter_slot *s)
{
	/* Jiffies where a tracing program may call bpf_jiffies64: 5.10 refuses it to them. The
	 * CO-RE check is a constant at load time, so there the verifier never sees the call;
	 * bpf_ktime_get_tai_ns (6.1) marks the kernels known to allow it. */
	bool jiffies = cfg->hz && bpf_core_enum_value_exists(enum bpf_func_id,
							     BPF_FUNC_ktime_get_tai_ns);
	__u64 now = jiffies ? bpf_jiffies64() : bpf_ktime_get_ns();
	__u64 second = jiffies ? cfg->hz : 1000000000ULL;

	if (now - s->window >= second) {
		s->window = now;
		s->passed = 0;
	}
	if (s->passed >= cfg->cause_limit) {
		s->held += 1;
		return 0;
	}
	s->passed += 1;
	return 1;
}

static __always_inline int ignored(struct dt_config *cfg, __u64 location)
{
	for (int i = 0; i < DT_IGNORE_NR; i++)
		if (location >= cfg->ignore_lo[i] && location < cfg->ignore_hi[i])
			return 1;
	return 0;
}

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

/* A drop every filter let through: count it, then (within its cause's rate) read its
 * headers, build the event and stream or record it. A rejected or only-counted drop never
 * pays for the headers, except under an IP filter, which needs them first. */
static __always_inline int matched(struct dt_config *cfg, struct sk_buff *skb, __u64 location,
				   __u32 reason, __u32 netns, __u32 ifindex, __u8 cause,
				   const bool btf)
{
	struct drop_event ev;
	struct dt_bytes bytes;
	struct counter_slot *slot;
	bool headers = false;

	if (cfg->filter_ip) {
		read_packet(skb, &ev, &bytes, btf);
		if (!(ev.family && (ip_matches(cfg, ev.saddr, ev.family) ||
				    ip_matches(cfg, ev.daddr, ev.family))))
			return 0;
		headers = true;
	}
	slot = count(location, reason, ifindex, netns);
	if (cfg->cause_limit && slot && !cause_allows(cfg, slot))
		return 0;
	/* Streaming only, into a full ring: lost, before the event is built. */
	if (!cfg->record_slots && !cfg->stream_off &&
	    !ring_has_room(cfg)) {
		stat_add(DT_STAT_LOST);
		return 0;
	}
	if (!headers)
		read_packet(skb, &ev, &bytes, btf);
	read_dnat_origin(skb, &ev);
	ev.location = location;
	ev.reason = reason;
	ev.netns = netns;
	ev.ifindex = ifindex;
	ev.cause = cause;
	ev.len = btf ? skb->len : BPF_CORE_READ(skb, len);
	ev.mark = btf ? skb->mark : BPF_CORE_READ(skb, mark);
	ev.hook = DT_HOOK_KFREE_SKB;
	/* Packet bytes only of IP packets, and only when asked (--pcap, or a recorder). */
	if (cfg->capture_len && ev.family && bytes.from)
		bytes.avail = linear_from_nh(skb, bytes.from, ev.len, btf);
	else
		bytes.from = NULL;
	/* nf_hook_slow frees the skb before it returns: its return completes the event. */
	if (cfg->cause_on[DT_CAUSE_NETFILTER] && location >= cfg->nf_lo && location < cfg->nf_hi)
		return park((__u64)skb, &ev, &bytes);
	emit(cfg, &ev, &bytes);
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
