"""Facts about the running kernel: drop-reason names and kernel symbols.

Reason numbers differ between kernel versions, so names always come from the running
kernel: its BTF `enum skb_drop_reason`, else the kfree_skb tracepoint's format file.
"""

from __future__ import annotations

import bisect
import re
from functools import cached_property
from pathlib import Path

from tracer import libbpf

_FORMAT = Path("/sys/kernel/tracing/events/skb/kfree_skb/format")
_KALLSYMS = Path("/proc/kallsyms")
_SYMBOLIC = re.compile(r"\{\s*(\d+)\s*,\s*\"(\w+)\"\s*\}")
_PREFIX = "SKB_DROP_REASON_"
# Reasons of kernels before 5.17, whose kfree_skb has no reason at all.
NO_REASON = "UNKNOWN"
# Functions that kfree_skb() an skb that never was a packet: `ip route get` builds one, and
# droptrace's own route lookups would otherwise show up as drops.
NOT_PACKETS = ("inet_rtm_getroute", "inet6_rtm_getroute")


def _from_btf() -> dict[int, str] | None:
    try:
        with libbpf.VmlinuxBtf() as btf:
            values = btf.enum("skb_drop_reason")
    except OSError:
        return None
    if not values:
        return None
    return {v: n.removeprefix(_PREFIX) for v, n in values.items()}


def _from_tracefs() -> dict[int, str] | None:
    try:
        text = _FORMAT.read_text()
    except OSError:
        return None
    found = {int(v): n for v, n in _SYMBOLIC.findall(text)}
    return found or None


class DropReasons:
    """Number <-> name of the running kernel's drop reasons."""

    def __init__(self, names: dict[int, str] | None = None) -> None:
        self._names = names if names is not None else (_from_btf() or _from_tracefs() or {})

    @property
    def available(self) -> bool:
        return bool(self._names)

    def name(self, value: int) -> str:
        if not self._names:
            return NO_REASON
        # Since 6.4 the high 16 bits name a subsystem (mac80211, openvswitch...).
        if value >> 16:
            return f"SUBSYS_{value >> 16}_{value & 0xFFFF}"
        return self._names.get(value, f"REASON_{value}")

    def value(self, name: str) -> int | None:
        wanted = name.upper().removeprefix(_PREFIX)
        return next((v for v, n in self._names.items() if n == wanted), None)

    def names(self) -> list[str]:
        return sorted(self._names.values())


# A module symbol's line: "ADDR t NAME\t[module]". They follow the core kernel's.
_MODULE_TEXT_SYMBOL = re.compile(rb"^([0-9a-f]+) [tTwW] (\S+)\t\[", re.MULTILINE)
_TEXT_KINDS = frozenset(b"tTwW")
_MAX_CACHED = 4096  # addresses named: drop locations are few, but BPF programs come and go


def function_spans(names: tuple[str, ...], path: Path = _KALLSYMS) -> dict[str, tuple[int, int]]:
    """[start, end) of a few kernel functions, end being the next symbol's address: what the
    BPF filters need before anything is attached, found without building the whole table
    (which takes a tenth of a second more, and is built later, on the first drop, if ever).
    A plain search for " t NAME\n" per name: a regex anchored at every line start of the
    8 MB file took several tenths of a second on a busy machine."""
    data = path.read_bytes()
    out = {}
    for name in names:
        for kind in (b"T", b"t"):
            at = data.find(b" " + kind + b" " + name.encode() + b"\n")
            if at < 0:
                continue
            start = int(data[data.rfind(b"\n", 0, at) + 1 : at], 16)
            after = data.find(b"\n", at) + 1
            end = int(data[after : data.find(b" ", after)] or b"0", 16)
            if start and end > start:
                out[name] = (start, end)
            break
    return out


class KernelSymbols:
    """Addresses -> function names from /proc/kallsyms, read once on first use.

    The core kernel's lines are in address order with fixed-width addresses, so a name is
    found by bisecting the file's bytes (~20 line reads), not by parsing all ~120k lines into
    a table first: that took 0.2-0.4 s of CPU at the first drop, in a storm CPU the traffic
    needed. Module symbols, which follow, are few and are parsed into a small sorted table."""

    def __init__(self, path: Path = _KALLSYMS) -> None:
        self._path = path
        self._cache: dict[int, str] = {}

    @cached_property
    def _file(self) -> tuple[bytes, int, int, list[tuple[int, str]]]:
        """The file, where its core kernel's lines end, their address width, and the
        modules' (address, name). The file is kept whole: a copy of its core part would
        double the transient peak (~5 MB more)."""
        data = self._path.read_bytes()
        first_module = data.find(b"\t[")
        split = len(data) if first_module < 0 else data.rfind(b"\n", 0, first_module) + 1
        modules = sorted(
            (int(m[1], 16), m[2].decode()) for m in _MODULE_TEXT_SYMBOL.finditer(data, split)
        )
        return data, split, max(data.find(b" "), 0), modules

    def name(self, addr: int) -> str:
        if addr in self._cache:
            return self._cache[addr]
        data, core_end, width, modules = self._file
        best = _core_symbol(data, core_end, width, addr)
        i = bisect.bisect_right(modules, (addr, "\uffff")) - 1
        if i >= 0 and (best is None or modules[i][0] > best[0]):
            best = modules[i]
        sym = best[1] if best is not None and best[0] else f"0x{addr:x}"
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[addr] = sym
        return sym


def _core_symbol(core: bytes, core_end: int, width: int, addr: int) -> tuple[int, str] | None:
    """The text symbol at or before `addr` among the core kernel's sorted lines, which are
    core[:core_end]."""
    if not core_end or not width or int(core[:width], 16) > addr:
        return None
    lo, hi = 0, core_end  # lo starts a line at or before addr; hi starts a line after it
    while True:
        mid = (lo + hi) // 2
        start = core.rfind(b"\n", lo, mid) + 1  # the line around mid, if it starts after lo
        if start <= lo:
            start = core.find(b"\n", mid, hi) + 1  # else the next line that starts before hi
            if start == 0 or start >= hi:
                break
        if int(core[start : start + width], 16) <= addr:
            lo = start
        else:
            hi = start
    while lo > 0 and core[lo + width + 1] not in _TEXT_KINDS:  # a data symbol: the one before
        lo = core.rfind(b"\n", 0, lo - 1) + 1
    end = core.find(b"\n", lo)
    return int(core[lo : lo + width], 16), core[lo + width + 3 : end if end >= 0 else None].decode()
