"""Facts about the running kernel: drop-reason names and kernel symbols.

Reason numbers differ between kernel versions, so names always come from the running
kernel: its BTF `enum skb_drop_reason`, else the kfree_skb tracepoint's format file.
"""

from __future__ import annotations

import bisect
import heapq
import re
from array import array
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
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


# A text symbol's line: a fixed-width hex address (so text order is address order), its kind.
_TEXT_SYMBOL = re.compile(rb"^([0-9a-f]+) [tTwW] (\S+)", re.MULTILINE)
_CHUNK = 1 << 16
_MAX_CACHED = 4096  # addresses named: drop locations are few, but BPF programs come and go


@dataclass(frozen=True, slots=True)
class _Table:
    """Text symbols sorted by address, kept compact: a kernel has ~120k of them, and as
    Python ints and strs they took ~24 MB of droptrace's memory."""

    addrs: array[int]  # ascending
    names: bytearray  # every name, concatenated, in the file's order
    ends: array[int]  # where each name ends in `names`
    order: array[int] | None = None  # addrs[i] is the address of name order[i]; None: i

    def name(self, i: int) -> str:
        if self.order is not None:
            i = self.order[i]
        return self.names[self.ends[i - 1] if i else 0 : self.ends[i]].decode()


def _read_table(path: Path) -> _Table:
    """Read in chunks, each name appended to one buffer: the whole file read at once (5-8 MB)
    and a bytes object per name made a transient peak of ~35 MB, twice the table's size."""
    addrs: array[int] = array("Q")
    names = bytearray()
    ends: array[int] = array("I")
    with path.open("rb") as f:
        rest = b""
        while True:
            chunk = f.read(_CHUNK)
            data = rest + chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)  # whole lines, the last too
            rest = data[cut:]
            for m in _TEXT_SYMBOL.finditer(data, 0, cut):
                addrs.append(int(m[1], 16))
                names.extend(m[2])
                ends.append(len(names))
            if not chunk:
                break
    # Modules and BPF programs follow the kernel's own symbols, each an ascending run, at
    # addresses of their own: the runs are merged (a sorted list of 120k indices took 11 MB).
    n = len(addrs)
    starts = [0, *(i for i in range(1, n) if addrs[i - 1] > addrs[i]), n]
    if len(starts) == 2:
        return _Table(addrs, names, ends)
    runs = (range(a, b) for a, b in pairwise(starts))
    order = array("I", heapq.merge(*runs, key=addrs.__getitem__))
    return _Table(array("Q", (addrs[i] for i in order)), names, ends, order)


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
    """Addresses -> function names from /proc/kallsyms, read once on first use."""

    def __init__(self, path: Path = _KALLSYMS) -> None:
        self._path = path
        self._cache: dict[int, str] = {}

    @cached_property
    def _table(self) -> _Table:
        return _read_table(self._path)

    def name(self, addr: int) -> str:
        if addr in self._cache:
            return self._cache[addr]
        t = self._table
        i = bisect.bisect_right(t.addrs, addr) - 1
        sym = t.name(i) if i >= 0 and t.addrs[i] else f"0x{addr:x}"
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[addr] = sym
        return sym
