/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What every droptrace BPF unit shares: the maps a drop event goes through on its way out
 * (declared here, defined once in maps.bpf.c) and the helpers that record and stream it.
 * Types and helpers only: the programs live in the .bpf.c files, which the Makefile links
 * into one object (libbpf's static linker resolves the extern maps).
 */
#ifndef DROPTRACE_DT_H
#define DROPTRACE_DT_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "events.h"

/* Each map's type is named so that maps.bpf.c can define the map declared here. */
struct dt_events_map {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
};
extern struct dt_events_map events SEC(".maps");

struct dt_stats_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DT_STAT_NR);
	__type(key, __u32);
	__type(value, __u64);
};
extern struct dt_stats_map stats SEC(".maps");

struct dt_config_map_def {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dt_config);
};
extern struct dt_config_map_def dt_config_map SEC(".maps");

/* A drop with its packet bytes: a ring record when capture is on, and a recorder slot.
 * Kernel-side only: user space reads it as a drop_event followed by a drop_packet. */
struct drop_record {
	struct drop_event ev;
	struct drop_packet pkt;
};

/* Where a drop's packet bytes are, read only once the drop is kept (recorded or streamed):
 * the skb's linear data from its network header, or a copy taken earlier (a drop parked
 * until nf_hook_slow returns, whose skb is freed by then). */
struct dt_bytes {
	const void *from;                /* network header; NULL: nothing to read */
	__u32 avail;                     /* linear bytes there (at most DT_CAPTURE_LEN) */
	const struct drop_packet *copy;  /* else these bytes, taken earlier */
};

/* Flight recorder: a ring of slots per CPU, overwriting the oldest. Per CPU because a
 * shared ring would need an atomic fetch-and-add, which 5.10 kernels lack; the newest N
 * drops overall are always within the union of each CPU's newest N. A slot has room for
 * the packet bytes whether or not they are captured (its size is fixed at load). */
struct dt_recorder_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024); /* resized from user space before load */
	__type(key, __u32);
	__type(value, struct drop_record);
};
extern struct dt_recorder_map recorder SEC(".maps");

struct dt_rec_head_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};
extern struct dt_rec_head_map rec_head SEC(".maps");

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
struct dt_flows_map {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
};
extern struct dt_flows_map flows SEC(".maps");

/* The flow this CPU saw last, with its state: a storm of one flow never touches `flows`. */
struct flow_cache {
	struct flow_key key;
	struct flow_state st;
};

struct dt_last_flow_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_cache);
};
extern struct dt_last_flow_map last_flow SEC(".maps");

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

/* The packet's first `want` bytes (at most what is linear, at most DT_CAPTURE_LEN) into p:
 * one probe read, done only for a drop that is kept. */
static __always_inline void capture(struct drop_packet *p, const struct dt_bytes *b, __u32 want)
{
	__u64 n; /* 64-bit: 5.10's verifier loses a 32-bit value's bounds in its 64-bit register */

	if (b->copy) {
		__builtin_memcpy(p, b->copy, sizeof(*p));
		return;
	}
	p->caplen = 0;
	p->pad = 0;
	n = b->avail < want ? b->avail : want;
	/* clang knows avail <= DT_CAPTURE_LEN and drops the clamp below; 5.10's verifier does
	 * not follow that, and refuses the read as unbounded: the barrier keeps the clamp. */
	asm volatile("" : "+r"(n));
	if (n > DT_CAPTURE_LEN)
		n = DT_CAPTURE_LEN;
	if (!b->from || !n)
		return;
	if (!bpf_probe_read_kernel(p->data, n, b->from))
		p->caplen = n;
}

static __always_inline void record(struct drop_event *e, const struct dt_bytes *b, __u32 slots,
				   __u32 capture_len)
{
	__u32 zero = 0, slot;
	__u64 *head = bpf_map_lookup_elem(&rec_head, &zero);
	struct drop_record *s;

	if (!head)
		return;
	slot = *head % slots;
	*head += 1; /* per-CPU: no other writer */
	s = bpf_map_lookup_elem(&recorder, &slot);
	if (!s)
		return;
	__builtin_memcpy(&s->ev, e, sizeof(*e));
	if (capture_len)
		capture(&s->pkt, b, capture_len);
	else
		s->pkt.caplen = 0; /* the slot may hold an older drop's bytes */
}

/* Room for one more streamed record? Checked before any per-flow or ring-buffer work,
 * so a storm the reader cannot keep up with costs two lock-free reads per drop, not a failed
 * reserve. */
static __always_inline int ring_has_room(const struct dt_config *cfg)
{
	/* A streamed record: the event, with its packet bytes when capture is on. */
	__u64 size = cfg->capture_len ? sizeof(struct drop_record) : sizeof(struct drop_event);
	__u64 ring = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	__u64 used = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	return used + size + 8 <= ring; /* 8: the record header */
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
 * that waited for nf_hook_slow's return. With capture on, a streamed record is the event and
 * its packet bytes (drop_record); else the event alone: bpf_ringbuf_reserve takes a constant
 * size, and user space tells the two apart by size. */
static __always_inline void emit(struct dt_config *cfg, struct drop_event *ev,
				 const struct dt_bytes *b)
{
	struct drop_event *out;
	struct drop_record *rec;
	__u32 capture_len = cfg->capture_len;

	if (cfg->record_slots) {
		stamp(ev);
		record(ev, b, cfg->record_slots, capture_len);
	}
	if (cfg->stream_off)
		return;
	if (!ring_has_room(cfg)) {
		stat_add(DT_STAT_LOST);
		return;
	}
	stamp(ev);
	if (cfg->flow_limit && !flow_allows(ev, cfg->flow_limit))
		return;
	if (capture_len) {
		rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
		if (!rec) {
			stat_add(DT_STAT_LOST);
			return;
		}
		__builtin_memcpy(&rec->ev, ev, sizeof(*ev));
		capture(&rec->pkt, b, capture_len);
		bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
		return;
	}
	out = bpf_ringbuf_reserve(&events, sizeof(*out), 0);
	if (!out) {
		stat_add(DT_STAT_LOST);
		return;
	}
	__builtin_memcpy(out, ev, sizeof(*ev));
	/* No wake-up per event: the reader polls with a short timeout and drains in batches. */
	bpf_ringbuf_submit(out, BPF_RB_NO_WAKEUP);
}

#endif
