"""Sockets of a network namespace over sock_diag (pyroute2's DiagSocket), and the process
holding each (socket inode -> /proc/PID/fd), for the socket-queue causes and counters.

sock_diag answers from the namespace the netlink socket was made in: every dump runs in a
thread that entered it (tracer.system.netns.run_in). INET_DIAG_SKMEMINFO gives each
socket's receive buffer and its own drop count (sk_drops: a UDP socket's full-buffer
drops, a listener's overflows), so the socket that dropped is found even after its queue
drained.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from ipaddress import ip_address
from pathlib import Path

from tracer.model.net import IPAddress
from tracer.model.sockets import Owner, PodOf, Socket
from tracer.system import netns, sysctl
from tracer.system.netlink import DiagSocket, NetlinkError

_TCP_STATES = {
    1: "established",
    2: "syn_sent",
    3: "syn_recv",
    4: "fin_wait1",
    5: "fin_wait2",
    6: "time_wait",
    7: "close",
    8: "close_wait",
    9: "last_ack",
    10: "listen",
    11: "closing",
}
LISTEN = 1 << 10
ALL_STATES = (1 << 12) - 1
_SKMEMINFO = 1 << (7 - 1)  # request INET_DIAG_SKMEMINFO (attribute 7)
# struct sk_meminfo (linux/sock_diag.h): u32 values in this order.
_RMEM_ALLOC, _RCVBUF, _DROPS = 0, 1, 8


@dataclass(frozen=True, slots=True)
class _Entry:
    family: int
    state: int
    src: str
    sport: int
    dst: str
    dport: int
    rqueue: int
    wqueue: int
    inode: int
    meminfo: tuple[int, ...]


def _meminfo(hexed: str | None) -> tuple[int, ...]:
    """pyroute2 leaves INET_DIAG_SKMEMINFO as 'aa:bb:...' hex bytes."""
    if not hexed:
        return ()
    raw = bytes(int(b, 16) for b in hexed.split(":"))
    return struct.unpack(f"={len(raw) // 4}I", raw[: len(raw) // 4 * 4])


def _dump(proto: int, states: int) -> list[_Entry]:
    out = []
    with DiagSocket() as ds:
        ds.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for m in ds.get_sock_stats(
                family=family, protocol=proto, states=states, extensions=_SKMEMINFO
            ):
                out.append(
                    _Entry(
                        family,
                        m["idiag_state"],
                        m["idiag_src"],
                        m["idiag_sport"],
                        m["idiag_dst"],
                        m["idiag_dport"],
                        m["idiag_rqueue"],
                        m["idiag_wqueue"],
                        m["idiag_inode"],
                        _meminfo(m.get_attr("INET_DIAG_SKMEMINFO")),
                    )
                )
    return out


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _socket(e: _Entry, proto: int) -> Socket:
    listening = e.state == 10
    name = "tcp" if proto == socket.IPPROTO_TCP else "udp"
    if proto == socket.IPPROTO_UDP:
        state = "connected" if e.state == 1 else "unconnected"
    else:
        state = _TCP_STATES.get(e.state, str(e.state))
    connected = e.dport != 0 and not listening
    mem = e.meminfo
    return Socket(
        proto=name,
        local=_endpoint(e.src, e.sport),
        remote=_endpoint(e.dst, e.dport) if connected else None,
        state=state,
        inode=e.inode,
        queued=e.rqueue,
        # A listener's wqueue is its backlog; otherwise the buffer comes from meminfo.
        limit=e.wqueue if listening else (mem[_RCVBUF] if len(mem) > _RCVBUF else 0),
        drops=mem[_DROPS] if len(mem) > _DROPS else None,
    )


def sockets(ns_path: Path, proto: int, states: int = ALL_STATES) -> list[Socket]:
    """Every socket of `proto` (IPPROTO_TCP/UDP) in these states, IPv4 and IPv6."""
    try:
        entries = netns.run_in(ns_path, lambda: _dump(proto, states))
    except NetlinkError as err:
        raise OSError(err.code, f"sock_diag: {err}") from None
    return [_socket(e, proto) for e in entries]


def _addr(endpoint: str) -> tuple[IPAddress, int]:
    host, _, port = endpoint.rpartition(":")
    return ip_address(host.strip("[]")), int(port)


def _unmapped(addr: IPAddress) -> IPAddress:
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


def _bound(s: Socket, dst: IPAddress, dport: int) -> int:
    """How well a socket's local address takes packets for dst:dport: 2 bound to it, 1 a
    wildcard of its family (or a dual-stack IPv6 one), 0 not at all."""
    addr, port = _addr(s.local)
    if port != dport:
        return 0
    addr = _unmapped(addr)
    if addr == dst:
        return 2
    return int(addr.is_unspecified and addr.version in (dst.version, 6))


def accepts(s: Socket, dst: IPAddress, dport: int) -> bool:
    """Whether a listener takes connections to dst:dport."""
    return _bound(s, dst, dport) > 0


def receiving(
    candidates: Iterable[Socket], dst: IPAddress, dport: int, src: IPAddress, sport: int
) -> Socket | None:
    """The socket a packet src:sport -> dst:dport was delivered to, as the kernel picks it:
    a connected socket of that peer first, then one bound to the address, then a wildcard."""
    best: tuple[int, Socket] | None = None
    for s in candidates:
        rank = _bound(s, dst, dport)
        if not rank:
            continue
        if s.remote is not None:
            raddr, rport = _addr(s.remote)
            if (_unmapped(raddr), rport) != (src, sport):
                continue
            rank = 3
        if best is None or rank > best[0]:
            best = (rank, s)
    return best[1] if best else None


def owners(netns_inode: int, inodes: set[int]) -> dict[int, tuple[int, str]]:
    """socket inode -> (pid, command) of the lowest pid holding it, looking only at the
    processes of that network namespace (a /proc scan of every fd would cost far more)."""
    found: dict[int, tuple[int, str]] = {}
    wanted = {f"socket:[{i}]": i for i in inodes}
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    for pid in pids:
        if len(found) == len(wanted):
            break
        base = Path(f"/proc/{pid}")
        try:
            if netns.inode_of(base / "ns" / "net") != netns_inode:
                continue
            fds = os.listdir(base / "fd")
        except OSError:
            continue  # gone, or a kernel thread
        for fd in fds:
            with contextlib.suppress(OSError):
                inode = wanted.get(os.readlink(base / "fd" / fd))
                if inode is not None and inode not in found:
                    found[inode] = (pid, _command(base))
    return found


def _command(base: Path) -> str:
    try:
        return (base / "comm").read_text().strip()
    except OSError:
        return "?"


# socket inode -> (when found, pid, command): a socket keeps its process, and a listener that
# overflows for minutes would otherwise cost a scan of its namespace's fds every few seconds.
_OWNERS: dict[tuple[int, int], tuple[float, int, str]] = {}
_OWNERS_TTL_S = 30.0
_OWNERS_MAX = 4096


def _owners_cached(netns_inode: int, inodes: set[int]) -> dict[int, tuple[int, str]]:
    now = time.monotonic()
    out: dict[int, tuple[int, str]] = {}
    for inode in inodes:
        hit = _OWNERS.get((netns_inode, inode))
        if hit is not None and now - hit[0] < _OWNERS_TTL_S and Path(f"/proc/{hit[1]}").exists():
            out[inode] = (hit[1], hit[2])
    missing = inodes - set(out)
    if missing:
        found = owners(netns_inode, missing)
        if len(_OWNERS) + len(found) > _OWNERS_MAX:
            _OWNERS.clear()
        for inode, (pid, command) in found.items():
            _OWNERS[(netns_inode, inode)] = (now, pid, command)
        out |= found
    return out


def with_owners(
    netns_inode: int, found: list[Socket], pod_of: PodOf = lambda _: None
) -> list[Socket]:
    """The sockets, each with the process that holds it (and its pod) where one does."""
    held = _owners_cached(netns_inode, {s.inode for s in found if s.inode})
    out = []
    for s in found:
        if s.inode in held:
            pid, command = held[s.inode]
            s = replace(s, owner=Owner(pid, command, pod_of(pid)))
        out.append(s)
    return out


def buffer_sysctls(ns_path: Path, proto: str) -> dict[str, int | str | None]:
    """The sysctls that bound a socket's receive buffer: the default and the cap of
    SO_RCVBUF, and the protocol's memory for all its sockets (pages: min pressure max)."""
    keys = ["net.core.rmem_default", "net.core.rmem_max"]
    keys.append("net.ipv4.udp_mem" if proto == "udp" else "net.ipv4.tcp_rmem")
    values = sysctl.read_text(ns_path, keys)
    return {k: int(v) if v is not None and v.isdigit() else v for k, v in values.items()}
