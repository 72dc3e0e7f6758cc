"""Choose, load and attach the BPF programs the running kernel allows.

kfree_skb is tried as tp_btf, then raw_tp, then the classic tracepoint: the first the kernel
accepts is used and the others are reported once as unavailable, with libbpf's reason.
The cause hooks (tracer.causes) load with it where kfree_skb gives no reason and the kernel
allows them, and are attached first.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from importlib import resources
from ipaddress import IPv4Network
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tracer import abi, libbpf
from tracer.causes import attach as causes
from tracer.errors import BpfObjectMissing, HookUnavailable
from tracer.model.net import Network
from tracer.model.tracing import CounterKey, Filters, HookReport, HookState, HookStatus, Stats

# (hook name shown to users, program name in drop.bpf.c), most capable first.
KFREE_SKB_VARIANTS = (
    ("tp_btf/kfree_skb", "kfree_skb_btf"),
    ("raw_tp/kfree_skb", "kfree_skb_raw"),
    ("tracepoint/skb/kfree_skb", "kfree_skb_tp"),
)
# The live stream reads at most ~2,000 events a second (session.DEFAULT_STREAM_RATE); 1 MB
# holds ~12,000 of them. libbpf maps the data area twice, all of it at attach: 4 MB took
# 8 MB of droptrace's resident memory.
DEFAULT_RING_BYTES = 1 << 20
# Events per second streamed for each flow of identical drops (per CPU); the rest are counted.
DEFAULT_FLOW_LIMIT = 20
# Drops of one cause (one in-kernel counter: place, reason, interface, namespace) recorded or
# streamed per second per CPU at most; the rest of a flood of it are only counted, in the
# kernel, before its headers are read (the summary shows them as suppressed). A storm of many
# flows is one cause: reading, explaining and recording each drop of it took the CPU the
# traffic needed. Every cause gets its first drops of every second through. The live stream
# also explains at most this many of one cause per second over all CPUs (tracer.session).
DEFAULT_CAUSE_RATE = 200
# Packet bytes kept with a drop when asked (--pcap, the recorder): all the kernel side has
# room for (DT_CAPTURE_LEN in events.h; a test keeps the two equal).
CAPTURE_BYTES = 128
# DROPTRACE_KFREE_SKB=raw_tp/kfree_skb (say) starts the search at that variant: to check the
# fallbacks on a kernel that accepts the better ones, or to sidestep a misbehaving one.
_FORCE_ENV = "DROPTRACE_KFREE_SKB"


def bpf_dir() -> Path:
    """Where the BPF objects are: $DROPTRACE_BPF_DIR, else tracer/_bpf (in a checkout after
    `make bpf`, in a wheel from its build)."""
    override = os.environ.get("DROPTRACE_BPF_DIR")
    return Path(override) if override else Path(str(resources.files("tracer") / "_bpf"))


def object_path(name: str = "drop.bpf.o") -> Path:
    path = bpf_dir() / name
    if not path.is_file():
        raise BpfObjectMissing(f"BPF object {path} not found: build it with `make bpf`")
    return path


def _mapped(net: Network) -> tuple[bytes, int]:
    """A network as ip_filter keys it: 16 bytes (IPv4 as ::ffff:a.b.c.d) and a prefix length."""
    if isinstance(net, IPv4Network):
        return b"\0" * 10 + b"\xff\xff" + net.network_address.packed, 96 + net.prefixlen
    return net.network_address.packed, net.prefixlen


def _direct_filters(cfg: Any, namespaces: list[int], networks: list[tuple[bytes, int]]) -> None:
    """A few namespaces, or networks (a pod's addresses), are compared directly in the kernel:
    a lookup in the map would cost a drop the filter rejects more than the rest of its path.
    Unused slots repeat the first, so they match nothing else."""
    if 0 < len(namespaces) <= abi.const("DT_NETNS_FAST"):
        for i in range(abi.const("DT_NETNS_FAST")):
            cfg.netns[i] = namespaces[i] if i < len(namespaces) else namespaces[0]
    if 0 < len(networks) <= abi.const("DT_NET_FAST"):
        for i in range(abi.const("DT_NET_FAST")):
            raw, prefixlen = networks[i] if i < len(networks) else networks[0]
            mask = (((1 << prefixlen) - 1) << (128 - prefixlen)).to_bytes(16, "big")
            net = bytes(a & m for a, m in zip(raw, mask, strict=True))
            cfg.net_hi[i], cfg.net_lo[i] = _words(net)
            cfg.mask_hi[i], cfg.mask_lo[i] = _words(mask)


def _words(raw: bytes) -> tuple[int, int]:
    """16 bytes as two 64-bit words of the bytes in memory order, as the BPF program loads them."""
    return int.from_bytes(raw[:8], sys.byteorder), int.from_bytes(raw[8:], sys.byteorder)


def _kernel_hz() -> int:
    """The kernel's HZ: the resolution of CLOCK_MONOTONIC_COARSE (6 in Linux's uapi; Python's
    time module does not name it) is one jiffy. 0 if it cannot be told."""
    try:
        tick = time.clock_getres(6)
    except OSError:
        return 0
    return round(1 / tick) if 0 < tick <= 0.1 else 0


def _nf_span() -> tuple[int, int] | None:
    from tracer.system.kernel import function_spans  # kallsyms: only read when it is needed

    return function_spans(("nf_hook_slow",)).get("nf_hook_slow")


class DropTracer:
    """The loaded kfree_skb program with its filters, ring buffer and counters."""

    def __init__(
        self,
        filters: Filters,
        ring_bytes: int = DEFAULT_RING_BYTES,
        record_slots: int = 0,
        stream: bool = True,
        flow_limit: int = DEFAULT_FLOW_LIMIT,
        kernel_reasons: bool = False,
        cause_limit: int = 0,
        capture_len: int = 0,
    ) -> None:
        """kernel_reasons: kfree_skb gives drop reasons here, so the cause hooks stay out.
        cause_limit: drops of one cause (counter key) recorded or streamed per second per
        CPU; the rest are only counted (0: every drop). capture_len: packet bytes kept with
        each drop streamed or recorded (0: none), at most DT_CAPTURE_LEN."""
        if not 0 <= capture_len <= abi.const("DT_CAPTURE_LEN"):
            raise ValueError(f"capture_len {capture_len} not in 0..{abi.const('DT_CAPTURE_LEN')}")
        self._capture_len = capture_len
        self.filters = filters
        self._causes_needed = not kernel_reasons
        self.hooks = HookReport(kernel_reasons=kernel_reasons)
        self._stack = ExitStack()
        path = object_path()
        try:
            self._obj, program = self._load_first(path, ring_bytes, max(record_slots, 1))
            self._configure(program, record_slots, stream, flow_limit, cause_limit)
            self._ring = self._stack.enter_context(libbpf.RingBuffer(self._obj.map("events")))
            self._counters = self._obj.map("counters")
            self._slots = self._obj.map("counter_slots")
            self._stats = self._obj.map("stats")
        except BaseException:
            self._stack.close()
            raise

    def _load_first(
        self, path: Path, ring_bytes: int, record_slots: int
    ) -> tuple[libbpf.BpfObject, str]:
        forced = os.environ.get(_FORCE_ENV)
        names = [h for h, _ in KFREE_SKB_VARIANTS]
        if forced and forced not in names:
            raise HookUnavailable(f"{_FORCE_ENV}={forced} is not one of {', '.join(names)}")
        start = names.index(forced) if forced else 0
        for hook, _ in KFREE_SKB_VARIANTS[:start]:
            skipped = f"skipped ({_FORCE_ENV}={forced})"
            self.hooks.hooks.append(HookStatus(hook, HookState.REFUSED, skipped))
        for hook, program in KFREE_SKB_VARIANTS[start:]:
            for plan in causes.plans(self._causes_needed):
                libbpf.take_log()
                obj = libbpf.BpfObject(path)
                try:
                    for _, other in KFREE_SKB_VARIANTS:
                        obj.set_autoload(other, other == program)
                    for cause_prog, on in causes.programs(plan).items():
                        obj.set_autoload(cause_prog, on)
                    obj.set_max_entries("events", ring_bytes)
                    obj.set_max_entries("recorder", record_slots)
                    obj.load()
                    abi.check_layout(obj.btf_struct_size)
                except OSError as err:
                    obj.close()
                    if plan:  # retry without these optional programs
                        self.hooks.hooks += causes.refused(plan[0], libbpf.describe(err))
                        continue
                    why = libbpf.describe(err)
                    self.hooks.hooks.append(HookStatus(hook, HookState.REFUSED, why))
                    break
                self._stack.callback(obj.close)
                self.hooks.hooks.append(HookStatus(hook, HookState.ACTIVE))
                self._cause_plan = plan
                return obj, program
        raise HookUnavailable(
            "the kernel refused every kfree_skb hook: " + "; ".join(self.hooks.unavailable)
        )

    def _configure(
        self, program: str, record_slots: int, stream: bool, flow_limit: int, cause_limit: int
    ) -> None:
        obj = self._obj
        f = self.filters
        one = ctypes.c_uint8(1)
        namespaces = list(dict.fromkeys(f.netns))
        for ino in namespaces:
            obj.map("netns_filter").update(ctypes.c_uint32(ino), one)
        for reason in f.reasons:
            obj.map("reason_filter").update(ctypes.c_uint32(reason), one)
        ip_key = abi.struct("ip_key")
        networks = [_mapped(net) for net in dict.fromkeys(f.networks)]
        for raw, prefixlen in networks:
            key = ip_key()
            key.prefixlen = prefixlen
            ctypes.memmove(key.addr, raw, 16)
            obj.map("ip_filter").update(key, one)
        cfg = abi.struct("dt_config")()
        cfg.filter_netns = len(namespaces)
        cfg.filter_ip = len(networks)
        _direct_filters(cfg, namespaces, networks)
        cfg.filter_reason = int(bool(f.reasons))
        cfg.ifindex = f.ifindex
        for i, (lo, hi) in enumerate(f.ignore[: abi.const("DT_IGNORE_NR")]):
            cfg.ignore_lo[i], cfg.ignore_hi[i] = lo, hi
        cfg.record_slots = record_slots
        cfg.stream_off = int(not stream)
        cfg.flow_limit = flow_limit
        cfg.cause_limit = cause_limit
        cfg.hz = _kernel_hz()
        cfg.capture_len = self._capture_len
        cfg.started_ns = time.time_ns()
        cfg.hook = [p for _, p in KFREE_SKB_VARIANTS].index(program)
        # Cause hooks before kfree_skb: a drop parked for nf_hook_slow's return needs it there.
        self._causes = causes.attach(obj, self._cause_plan, self._stack, self._causes_needed)
        self.hooks.hooks += self._causes.hooks
        on = self._causes.on
        nf_span = (f.nf_span or _nf_span()) if on.get("DT_CAUSE_NETFILTER") else None
        causes.configure(cfg, on, nf_span)
        obj.map("dt_config_map").update(ctypes.c_uint32(0), cfg)
        # Attach last: filters are in place before the first event can fire.
        self._link = self._stack.enter_context(obj.attach(program))

    def pin(self, directory: Path, maps: tuple[str, ...]) -> None:
        """Pin `maps` and the attachment under `directory` so they outlive this process."""
        for name in maps:
            self._obj.map(name).pin(directory / name)
        self._link.pin(directory / "link")
        for c in causes.CAUSES:  # else the recorder's parked drops never finish
            names = (c.fexit, c.kprobe, c.kretprobe)
            pinned: list[Path] = []
            try:
                for name, link in self._causes.links:
                    if name in names:
                        link.pin(directory / f"link-{name}")
                        pinned.append(directory / f"link-{name}")
            except OSError as err:
                # Before 5.15 a kprobe is a perf event, not a BPF link: it cannot be pinned
                # (EINVAL). The recorder then goes without this cause, and says so.
                for path in pinned:
                    path.unlink()
                why = err.strerror or str(err)
                self._cause_off(c, f"not kept by the recorder (cannot be pinned here: {why})")

    def _cause_off(self, cause: causes.Cause, why: str) -> None:
        cfg = abi.struct("dt_config")()
        self._obj.map("dt_config_map").lookup(ctypes.c_uint32(0), cfg)
        cfg.cause_on[abi.const(cause.index)] = 0  # type: ignore[attr-defined]
        self._obj.map("dt_config_map").update(ctypes.c_uint32(0), cfg)
        self.hooks.hooks = [
            replace(h, state=HookState.REFUSED, why=why)
            if h.cause and h.state is HookState.ACTIVE and h.hook.endswith(f"/{cause.function}")
            else h
            for h in self.hooks.hooks
        ]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def detach(self) -> None:
        """No new drops from here on; the ring and the counters stay readable."""
        for _, link in self._causes.links:
            link.destroy()
        self._link.destroy()

    def poll(self, timeout_ms: int, on_sample: Callable[[bytes], None], limit: int) -> int:
        return self._ring.poll(timeout_ms, on_sample, limit)

    def counters(self) -> dict[CounterKey, int]:
        return read_counters(self._counters, self._slots)

    def totals(self) -> tuple[dict[CounterKey, int], Stats]:
        """The per-key counts and the totals, from one read of the counters."""
        return read_totals(self._stats, self._counters, self._slots)


def read_counters(counters: libbpf.Map, slots: libbpf.Map) -> dict[CounterKey, int]:
    """The exact per-key drop counts (live, or a recorder's pins)."""
    return _read(counters, slots)[0]


def read_totals(
    stats: libbpf.Map, counters: libbpf.Map, slots: libbpf.Map
) -> tuple[dict[CounterKey, int], Stats]:
    """The exact per-key drop counts and the totals, from one read of the counters: matched
    (the counters' sum and the uncounted), lost, uncounted, and suppressed (by the per-flow
    limit, and over a cause's rate)."""

    def get(name: str) -> int:
        return libbpf.percpu_sum(stats, ctypes.c_uint32(abi.const(name)))

    counts, held = _read(counters, slots)
    uncounted = get("DT_STAT_UNCOUNTED")
    return counts, Stats(
        sum(counts.values()) + uncounted,
        get("DT_STAT_LOST"),
        uncounted,
        get("DT_STAT_SUPPRESSED") + held,
    )


def _read(counters: libbpf.Map, slots: libbpf.Map) -> tuple[dict[CounterKey, int], int]:
    """Per-key drop counts and the drops held over their cause's rate: every CPU's counter
    slots plus the `counters` hash, where a cause is counted on a CPU whose slot for it another
    cause holds. A key is never moved between them, so each sum only grows."""
    out: dict[CounterKey, int] = {}
    held = 0
    values = (abi.struct("counter_slot") * libbpf.num_possible_cpus())()
    for i in range(abi.const("DT_SLOTS")):
        if not slots.lookup(ctypes.c_uint32(i), values):
            continue
        for s in values:
            if s.used and s.count:  # type: ignore[attr-defined]
                key = CounterKey(s.location, s.reason, s.ifindex, s.netns)  # type: ignore[attr-defined]
                out[key] = out.get(key, 0) + s.count  # type: ignore[attr-defined]
                held += s.held  # type: ignore[attr-defined]
    for k in counters.keys(abi.struct("counter_key")):
        key = CounterKey(k.location, k.reason, k.ifindex, k.netns)  # type: ignore[attr-defined]
        out[key] = out.get(key, 0) + libbpf.percpu_sum(counters, k)
    return out, held
