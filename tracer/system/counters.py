"""A namespace's own kernel counters (/proc/net/snmp, snmp6, netstat, stat/nf_conntrack), read
from inside it, and how much each moved since droptrace last looked.

/proc/self/net is the *process's* namespace; a thread that entered another one
(tracer.system.netns.run_in) sees its own through /proc/thread-self/net.
"""

from __future__ import annotations

from pathlib import Path

from tracer.system import netns

_NET = Path("/proc/thread-self/net")
# Older kernels name conntrack's clash column differently; one name for both.
_CT_COLUMNS = {"clashres": "clash_resolve"}


def parse_snmp(text: str) -> dict[str, dict[str, int]]:
    """`Udp: InDatagrams ...` header/value line pairs -> {"Udp": {"InDatagrams": n, ...}}."""
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        names, nums = head.split(), values.split()
        if not names or names[0] != nums[0]:
            continue
        group = names[0].rstrip(":")
        out[group] = {n: int(v) for n, v in zip(names[1:], nums[1:], strict=False)}
    return out


def parse_snmp6(text: str) -> dict[str, int]:
    """`Udp6InCsumErrors 0` lines -> {"Udp6InCsumErrors": 0, ...}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_conntrack_stats(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack: a header, then one line of hex values per CPU; the sum
    over CPUs of each column ("entries" is the namespace's count on every line: kept once)."""
    lines = text.splitlines()
    if not lines:
        return {}
    names = [_CT_COLUMNS.get(n, n) for n in lines[0].split()]
    out = dict.fromkeys(names, 0)
    for line in lines[1:]:
        for name, value in zip(names, line.split(), strict=False):
            if name == "entries":
                out[name] = int(value, 16)
            else:
                out[name] += int(value, 16)
    return out


def _read(name: str) -> str:
    try:
        return (_NET / name).read_text()
    except OSError:
        return ""


def snmp(ns_path: Path) -> dict[str, dict[str, int]]:
    """The namespace's SNMP MIBs and TcpExt/IpExt counters; IPv6 ones under "Ip6"."""

    def read() -> dict[str, dict[str, int]]:
        out = parse_snmp(_read("snmp"))
        out.update(parse_snmp(_read("netstat")))
        out["Ip6"] = parse_snmp6(_read("snmp6"))
        return out

    return netns.run_in(ns_path, read)


def conntrack_stats(ns_path: Path) -> dict[str, int] | None:
    """Conntrack's statistics in the namespace, or None where conntrack is not loaded."""
    text = netns.run_in(ns_path, lambda: _read("stat/nf_conntrack"))
    return parse_conntrack_stats(text) if text else None


class Deltas:
    """How far counters moved since the previous look at the same key (a namespace): a
    storm re-reads them every few seconds, and only what moved since says what this drop did."""

    def __init__(self) -> None:
        self._last: dict[tuple[object, ...], dict[str, int]] = {}

    def moved(self, key: tuple[object, ...], values: dict[str, int]) -> dict[str, int] | None:
        """Counters that changed since the last look, by how much; None at the first look."""
        before = self._last.get(key)
        self._last[key] = dict(values)
        if before is None:
            return None
        return {k: v - before.get(k, 0) for k, v in values.items() if v != before.get(k, 0)}
