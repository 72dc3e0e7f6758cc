"""The kernel's drop counters of a network namespace, read from inside it.

SNMP MIBs from /proc/net/{snmp,netstat,snmp6}, conntrack's per-CPU statistics from
/proc/net/stat/nf_conntrack, and each interface's IFLA_STATS64 and its qdiscs' drops over
rtnetlink (tracer.system.devstats). softnet_stat is per CPU, not per namespace: read once,
host-wide. What a device is (its driver, ring) is read with pyroute2 when it is needed.

/proc/net is /proc/self/net, which follows the *process's* namespace; the thread that
setns()ed (tracer.system.netns.run_in) reads its own through /proc/thread-self/net.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from tracer.model.counters import Device, DeviceInfo, NetnsCounters, Reading
from tracer.system import devstats, netns
from tracer.system.netns import NetnsRef

_NET = Path("/proc/thread-self/net")
SOFTNET = Path("/proc/net/softnet_stat")
# /proc/net/stat/nf_conntrack columns that count packets conntrack dropped
CONNTRACK_DROPS = ("drop", "insert_failed")  # early_drop evicts a connection, drops no packet


def parse_snmp(text: str, wanted: Collection[str]) -> dict[str, int]:
    """/proc/net/snmp and /proc/net/netstat: pairs of lines `Group: names` / `Group: values`,
    as nstat names (`Udp` + `RcvbufErrors`)."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        group, _, names = head.partition(":")
        for name, value in zip(names.split(), values.partition(":")[2].split(), strict=False):
            key = group + name
            if key in wanted:
                out[key] = int(value)
    return out


def parse_snmp6(text: str, wanted: Collection[str]) -> dict[str, int]:
    """/proc/net/snmp6: one `Name value` a line, already nstat's names."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in wanted:
            out[parts[0]] = int(parts[1])
    return out


def parse_conntrack_stat(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack: a header, then one line of hex columns per CPU (the
    columns differ between kernels, so they are found by name)."""
    lines = text.splitlines()
    if not lines:
        return {}
    names = lines[0].split()
    totals = dict.fromkeys(CONNTRACK_DROPS, 0)
    for line in lines[1:]:
        for name, value in zip(names, line.split(), strict=False):
            if name in totals:
                totals[name] += int(value, 16)
    return {f"conntrack_{k}": v for k, v in totals.items() if k in names}


def parse_softnet(text: str) -> dict[str, int]:
    """/proc/net/softnet_stat: one line of hex columns per CPU; the 2nd is packets dropped
    because the CPU's backlog (netdev_max_backlog) was full, the 3rd the times the
    receive softirq ran out of budget (time_squeeze)."""
    dropped = squeezed = 0
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 3:
            dropped += int(cols[1], 16)
            squeezed += int(cols[2], 16)
    return {"dropped": dropped, "time_squeeze": squeezed}


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # no IPv6 in this kernel, conntrack not loaded here
        return ""


def _devices() -> tuple[Device, ...]:
    return tuple(Device(i, counts, qdisc) for i, (counts, qdisc) in devstats.read().items())


def device_info(ref: NetnsRef, ifindex: int, qdisc: str | None) -> DeviceInfo | None:
    """The device's name and driver (its link kind, else the NIC driver sysfs names: only
    for the host's own devices) and its receive ring (ethtool -g, NICs only)."""

    from tracer.system.netlink import IPRoute, NetlinkError

    def read() -> DeviceInfo | None:
        with IPRoute() as ipr:
            links = ipr.get_links(ifindex)
        if not links:
            return None
        link = links[0]
        name = str(link.get_attr("IFLA_IFNAME"))
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info else None
        queues = link.get_attr("IFLA_NUM_RX_QUEUES"), link.get_attr("IFLA_NUM_TX_QUEUES")
        ring, ring_max = _ring(name) if kind is None else (None, None)
        return DeviceInfo(name, kind, qdisc, ring, ring_max, *queues)

    try:
        found = netns.run_in(ref.path, read)
    except (OSError, NetlinkError):
        return None
    if found is not None and found.driver is None and ref.path == netns.HOST_NETNS:
        driver = Path(f"/sys/class/net/{found.name}/device/driver")
        with contextlib.suppress(OSError):
            found = replace(found, driver=driver.resolve(strict=True).name)
    return found


def _ring(name: str) -> tuple[int | None, int | None]:
    """A NIC's receive ring size and its maximum (ethtool netlink); none for others."""
    from tracer.system.netlink import ethtool

    try:
        with ethtool() as tool:
            rings = tool.get_rings(name)
    except Exception:  # pyroute2 raises errors of its own for a device without rings
        return None, None
    return rings.rx, rings.rx_max


def read_here(inode: int, name: str, wanted: Collection[str]) -> NetnsCounters:
    """Every counter of the namespace the calling thread is in."""
    mibs = parse_snmp(_text(_NET / "snmp"), wanted)
    mibs |= parse_snmp(_text(_NET / "netstat"), wanted)
    mibs |= parse_snmp6(_text(_NET / "snmp6"), wanted)
    mibs |= parse_conntrack_stat(_text(_NET / "stat" / "nf_conntrack"))
    return NetnsCounters(inode, name, mibs, _devices())


def read_namespace(ref: NetnsRef, wanted: Collection[str]) -> NetnsCounters:
    return netns.run_in(ref.path, lambda: read_here(ref.inode, ref.name, wanted))


def read(refs: Collection[NetnsRef], wanted: Collection[str], host_wide: bool) -> Reading:
    """Every namespace of `refs` (one that went away meanwhile is left out) and, with
    `host_wide`, softnet_stat."""
    at = time.monotonic()
    namespaces = {}
    for ref in refs:
        try:
            namespaces[ref.inode] = read_namespace(ref, wanted)
        except OSError:  # the namespace went away meanwhile
            continue
    softnet = parse_softnet(_text(SOFTNET)) if host_wide else {}
    return Reading(at, namespaces, softnet)


def mibs(ns_path: Path, wanted: Collection[str]) -> dict[str, int]:
    """Just the SNMP MIBs of `wanted` (nstat's names) of a namespace, for one drop's evidence."""

    def read() -> dict[str, int]:
        out = parse_snmp(_text(_NET / "snmp"), wanted)
        out |= parse_snmp(_text(_NET / "netstat"), wanted)
        return out | parse_snmp6(_text(_NET / "snmp6"), wanted)

    return netns.run_in(ns_path, read)


# Older kernels name conntrack's clash column differently; one name for both.
_CT_COLUMNS = {"clashres": "clash_resolve"}


def parse_conntrack_table(text: str) -> dict[str, int]:
    """Every column of /proc/net/stat/nf_conntrack summed over CPUs ("entries" is the
    namespace's count on every line: kept once)."""
    lines = text.splitlines()
    if not lines:
        return {}
    names = [_CT_COLUMNS.get(n, n) for n in lines[0].split()]
    out = dict.fromkeys(names, 0)
    for line in lines[1:]:
        for name, value in zip(names, line.split(), strict=False):
            out[name] = int(value, 16) if name == "entries" else out[name] + int(value, 16)
    return out


def conntrack_table(ns_path: Path) -> dict[str, int] | None:
    """Conntrack's statistics in the namespace, or None where conntrack is not loaded."""
    text = netns.run_in(ns_path, lambda: _text(_NET / "stat" / "nf_conntrack"))
    return parse_conntrack_table(text) if text else None


MAX_KEYS = 4096


class Deltas:
    """How far counters moved since the previous look at the same key (a namespace): a
    storm re-reads them every few seconds, and only what moved since says what this drop did."""

    def __init__(self) -> None:
        self._last: dict[tuple[object, ...], dict[str, int]] = {}

    def moved(self, key: tuple[object, ...], values: dict[str, int]) -> dict[str, int] | None:
        """Counters that changed since the last look, by how much; None at the first look."""
        before = self._last.get(key)
        if before is None and len(self._last) >= MAX_KEYS:
            self._last.clear()  # namespaces come and go: start again from a first look
        self._last[key] = dict(values)
        if before is None:
            return None
        return {k: v - before.get(k, 0) for k, v in values.items() if v != before.get(k, 0)}
