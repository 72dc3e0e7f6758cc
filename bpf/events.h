/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The only definition of what droptrace's BPF programs share with user space.
 * tracer/abi.py parses this file (fixed-width fields only, no nesting) and checks the
 * sizes against the BTF that clang put in the object, so the layout is never written twice.
 */
#ifndef DROPTRACE_EVENTS_H
#define DROPTRACE_EVENTS_H

#define DT_ADDR_LEN 16

/* Which program produced an event (drop_event.hook). */
#define DT_HOOK_KFREE_SKB 1
#define DT_HOOK_RPFILTER 2
#define DT_HOOK_NETFILTER 3

/* Hooks on the functions that decide a drop, for kernels whose kfree_skb has no reason
 * (before 5.17); indexes of dt_config.cause_on. Each loads as fexit, else kprobe+kretprobe. */
#define DT_CAUSE_RPFILTER 0  /* fib_validate_source returned -EXDEV: rp_filter */
#define DT_CAUSE_NETFILTER 1 /* nf_hook_slow dropped it: hook and family */
#define DT_CAUSE_NR 2

/* Indexes of the per-CPU "stats" array. */
#define DT_STAT_MATCHED 0   /* unused: the drops that passed the filters are the sum of the
			     * counters and DT_STAT_UNCOUNTED (one add less per drop) */
#define DT_STAT_LOST 1      /* events the ring buffer had no room for */
#define DT_STAT_UNCOUNTED 2 /* drops the counters map had no slot for */
#define DT_STAT_SUPPRESSED 3 /* events held back by the per-flow limit (still counted); the
			       * per-cause gate's are in counter_slot.held */
#define DT_STAT_NR 4

/* Kernel code ranges whose kfree_skb is not a packet drop (e.g. the skb an `ip route get`
 * builds): user space fills them from kallsyms. */
#define DT_IGNORE_NR 4

/* Packet bytes kept with a drop when capture is on (dt_config.capture_len): at most this
 * many from the network header, for `--pcap`. Each streamed event then costs 136 bytes more
 * of ring buffer and one probe read of up to this size; with capture off, neither. */
#define DT_CAPTURE_LEN 128

/* Namespaces a filter compares directly, without a map lookup; more go to netns_filter. */
#define DT_NETNS_FAST 4
/* Networks an IP filter compares directly (a pod's addresses); more go to ip_filter. */
#define DT_NET_FAST 4

/* One dropped packet, as sent through the ring buffer. Addresses are IPv4 (first 4
 * bytes) or IPv6 per `family` (2 = AF_INET, 10 = AF_INET6, 0 = not IP). Ports are in
 * host order; for ICMP, sport = type and dport = code. */
struct drop_event {
	__u64 ts_ns;      /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 location;   /* kernel address that freed the skb */
	__u32 reason;     /* enum skb_drop_reason of the running kernel, 0 if none */
	__u32 netns;      /* network namespace inode */
	__u32 ifindex;    /* device, else the socket's bound device, else skb_iif */
	__u32 len;        /* skb->len */
	__u32 mark;       /* skb->mark */
	__u16 l3proto;    /* ETH_P_* in host order */
	__u8 l4proto;     /* IPPROTO_* */
	__u8 family;
	__u16 sport;
	__u16 dport;
	__u8 hook;        /* DT_HOOK_* */
	__u8 cause;       /* DT_HOOK_RPFILTER/NETFILTER: that hook saw this skb dropped; else 0 */
	__u8 nf_hook;     /* with cause NETFILTER: NF_INET_* hook number */
	__u8 nf_pf;       /* with cause NETFILTER: NFPROTO_* family */
	__u8 saddr[DT_ADDR_LEN];
	__u8 daddr[DT_ADDR_LEN];
	__u32 suppressed; /* identical drops of this flow held back on this CPU since its last event */
	/* Where the packet was sent before a DNAT in this namespace rewrote its destination
	 * (the original direction of the conntrack entry it carries), if it was: a service's
	 * address, for a first packet whose entry dies with it. orig_set 0: no DNAT seen. */
	__u16 orig_dport;
	__u8 orig_set;
	__u8 pad2;
	__u8 orig_daddr[DT_ADDR_LEN];
};

/* Per-CPU counter slots: a cause's slot is the one its counter key hashes to (DT_SLOTS, a
 * power of two); a cause whose slot another cause holds on that CPU is counted in the
 * `counters` hash instead. A slot is an array element, so counting a drop costs no hash-map
 * lookup, and it carries the cause's rate gate (cause_limit). Reading the counters means
 * summing both: each key is in a slot of some CPUs and/or in the hash, never moved. */
#define DT_SLOTS 256

struct counter_slot {
	__u64 location;
	__u32 reason;
	__u32 ifindex;
	__u32 netns;
	__u32 used;       /* 1: the key above holds this slot */
	__u64 count;      /* its drops on this CPU */
	__u64 window;     /* start of the cause's current one-second window on this CPU (jiffies,
			   * or ns without dt_config.hz) */
	__u32 passed;     /* drops let on to be recorded or streamed in that window */
	__u32 pad;
	__u64 held;       /* drops only counted: over the cause's rate (DT_STAT_SUPPRESSED adds them) */
};

/* The packet of a drop_event, right after it in a ring record (capture on) and in every
 * recorder slot: its first bytes from the network header, as far as they are linear in
 * the skb (paged data is not read). */
struct drop_packet {
	__u32 caplen;     /* bytes of data[] captured; 0: none (capture off, or not IP) */
	__u32 pad;
	__u8 data[DT_CAPTURE_LEN];
};

/* Key of the exact per-CPU drop counters (the `counters` hash). */
struct counter_key {
	__u64 location;
	__u32 reason;
	__u32 ifindex;
	__u32 netns;
	__u32 pad;
};

/* Filters, written by user space after load and before attach. 0 = off. */
struct dt_config {
	__u32 filter_netns;   /* how many namespaces: up to DT_NETNS_FAST in netns[], else the map */
	__u32 filter_ip;      /* how many networks a source or destination must be in: up to
			       * DT_NET_FAST in net_*[], else the ip_filter map */
	__u32 filter_reason;  /* only reasons present in reason_filter */
	__u32 ifindex;        /* only this interface (with filter_netns, in those namespaces) */
	__u64 ignore_lo[DT_IGNORE_NR]; /* [lo, hi) location ranges to ignore; unused: 0, 0 */
	__u64 ignore_hi[DT_IGNORE_NR];
	__u32 record_slots;   /* flight recorder: slots per CPU in use (0: not recording) */
	__u32 stream_off;     /* 1: no ring-buffer events (a recorder with nobody reading) */
	__u64 started_ns;     /* wall-clock start (CLOCK_REALTIME ns), for `droptrace status` */
	__u32 hook;           /* index of the kfree_skb variant attached, for reports */
	__u32 flow_limit;     /* stream at most this many events per flow per second per CPU; 0: all */
	__u32 cause_on[DT_CAUSE_NR]; /* 1: that cause hook is attached */
	__u32 cause_limit;    /* record or stream at most this many drops of one cause (counter
			       * key) per second per CPU; the rest are only counted. 0: all */
	__u32 hz;             /* the kernel's HZ: the gate's clock is jiffies (a clock read costs
			       * ~30 ns per drop on a VM, jiffies ~1); 0: bpf_ktime_get_ns() */
	__u64 nf_lo;          /* [nf_lo, nf_hi): nf_hook_slow, whose drops wait for its return */
	__u64 nf_hi;
	__u32 netns[DT_NETNS_FAST]; /* with filter_netns <= DT_NETNS_FAST; unused slots repeat [0] */
	/* With filter_ip <= DT_NET_FAST: network i as an IPv4-mapped address (like ip_key) in two
	 * 64-bit words of its bytes in memory order; address a is in it if (a & mask) == net
	 * word by word. Unused slots repeat [0]. */
	__u64 net_hi[DT_NET_FAST];
	__u64 net_lo[DT_NET_FAST];
	__u64 mask_hi[DT_NET_FAST];
	__u64 mask_lo[DT_NET_FAST];
	__u32 capture_len;    /* packet bytes kept per drop, at most DT_CAPTURE_LEN; 0: none */
	__u32 pad3;
};

/* LPM key of ip_filter: IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d). */
struct ip_key {
	__u32 prefixlen;
	__u8 addr[DT_ADDR_LEN];
};

#endif
