"""The exact nf_tables rule behind a drop, from nftrace (NFNLGRP_NFTRACE over netlink).

When netfilter drops a flow in a namespace, droptrace adds a table there that sets
`meta nftrace` on that flow's next packets (rate-limited), and listens to the namespace's
trace group. The kernel then reports every rule verdict for those packets: table, chain,
rule handle and verdict. The first drop of a flow is attributed by counter deltas
(netfilter.py); the following ones by the trace, which also covers rules without counters.

The table is named after droptrace's pid and removed on every exit; a state file lists the
namespaces it went to, so a run killed with SIGKILL is cleaned up by the next start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from pyroute2.netlink import nla
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, nfgen_msg

from tracer.enrich import netns
from tracer.enrich.netfilter import comment_of
from tracer.model import Drop, IPAddress, Rule

STATE_DIR = Path("/run/droptrace/nftrace")
_TABLE_PREFIX = "droptrace_"
_NFNLGRP_NFTRACE = 9
_NFT_MSG_TRACE = 17
_TRACE_RULE, _TRACE_POLICY = 3, 1  # enum nft_trace_types
_NF_DROP = 0
_FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
_IPTABLES_FAMILY = {"ip": ("iptables-nft-save", "ipv4"), "ip6": ("ip6tables-nft-save", "ipv6")}
_KEEP_S = 10.0  # how long a flow's traced verdict names its drops before it is traced again
_WAIT_S = 5.0  # how long a flow is traced waiting for another packet
_MAX_FLOWS = 16  # flows traced at once per namespace
_START_GAP_S = 0.2  # at most 5 flows a second start being traced per namespace
_RATE = "5/second"  # traced packets per flow: bounds the trace messages in a drop storm
_PROTOS = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "ipv6-icmp"}


class nft_trace_msg(nfgen_msg):  # type: ignore[misc]  # pyroute2 names messages so
    """NFT_MSG_TRACE: pyroute2 0.9 decodes nf_tables messages but has no trace message."""

    nla_map = (
        ("NFTA_TRACE_UNSPEC", "none"),
        ("NFTA_TRACE_TABLE", "asciiz"),
        ("NFTA_TRACE_CHAIN", "asciiz"),
        ("NFTA_TRACE_RULE_HANDLE", "be64"),
        ("NFTA_TRACE_TYPE", "be32"),
        ("NFTA_TRACE_VERDICT", "verdict"),
        ("NFTA_TRACE_ID", "be32"),
        ("NFTA_TRACE_LL_HEADER", "cdata"),
        ("NFTA_TRACE_NETWORK_HEADER", "cdata"),
        ("NFTA_TRACE_TRANSPORT_HEADER", "cdata"),
        ("NFTA_TRACE_IIF", "be32"),
        ("NFTA_TRACE_IIFTYPE", "be16"),
        ("NFTA_TRACE_OIF", "be32"),
        ("NFTA_TRACE_OIFTYPE", "be16"),
        ("NFTA_TRACE_MARK", "be32"),
        ("NFTA_TRACE_NFPROTO", "be32"),
        ("NFTA_TRACE_POLICY", "be32"),
    )

    class verdict(nla):  # type: ignore[misc]
        nla_map = (
            ("NFTA_VERDICT_UNSPEC", "none"),
            ("NFTA_VERDICT_CODE", "be32"),
            ("NFTA_VERDICT_CHAIN", "asciiz"),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """One drop verdict the kernel traced: where, and for which packet."""

    seen: float  # monotonic
    family: str
    table: str
    chain: str
    handle: int | None  # None: the chain's policy dropped it
    src: IPAddress
    dst: IPAddress
    proto: int
    dport: int | None


@dataclass(frozen=True, slots=True)
class FlowKey:
    src: IPAddress
    dst: IPAddress
    proto: int
    dport: int | None


def _key(drop: Drop) -> FlowKey | None:
    if drop.src is None or drop.dst is None:
        return None
    return FlowKey(drop.src, drop.dst, drop.l4proto, drop.dport)


Packet = tuple[IPAddress, IPAddress, int, int | None]  # src, dst, proto, dport


def parse_verdicts(data: bytes, now: float, packets: dict[int, Packet]) -> list[Verdict]:
    """The drop verdicts in a batch of netlink messages from the trace group.

    The kernel sends a packet's headers once, with the first message of its trace id;
    `packets` keeps them by id for the messages that follow (the verdict among them).
    """
    out, offset = [], 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_TRACE:
            msg = nft_trace_msg(data[offset : offset + length])
            msg.decode()
            v = _verdict(msg, now, packets)
            if v is not None:
                out.append(v)
        offset += (length + 3) & ~3
    return out


def _verdict(msg: nft_trace_msg, now: float, packets: dict[int, Packet]) -> Verdict | None:
    trace_id = msg.get_attr("NFTA_TRACE_ID")
    header = msg.get_attr("NFTA_TRACE_NETWORK_HEADER")
    if header:
        packet = _packet(header, msg.get_attr("NFTA_TRACE_TRANSPORT_HEADER"))
        if packet is not None:
            if len(packets) > 4096:
                packets.clear()
            packets[trace_id] = packet
    kind = msg.get_attr("NFTA_TRACE_TYPE")
    table = msg.get_attr("NFTA_TRACE_TABLE") or ""
    if table.startswith(_TABLE_PREFIX):
        return None
    if kind == _TRACE_RULE:
        v = msg.get_attr("NFTA_TRACE_VERDICT")
        code = v.get_attr("NFTA_VERDICT_CODE") if v is not None else None
        handle = msg.get_attr("NFTA_TRACE_RULE_HANDLE")
    elif kind == _TRACE_POLICY:
        code, handle = msg.get_attr("NFTA_TRACE_POLICY"), None
    else:
        return None
    if code != _NF_DROP or trace_id not in packets:
        return None
    src, dst, proto, dport = packets.pop(trace_id)
    # The table's family is the message's; NFTA_TRACE_NFPROTO is the packet's (ip in inet).
    family = _FAMILIES.get(msg["nfgen_family"], "?")
    chain = msg.get_attr("NFTA_TRACE_CHAIN") or ""
    return Verdict(now, family, table, chain, handle, src, dst, proto, dport)


def _packet(network: bytes, transport: bytes | None) -> Packet | None:
    addresses = _addresses(network)
    if addresses is None:
        return None
    src, dst, proto = addresses
    dport = None
    if proto in (6, 17, 132) and transport and len(transport) >= 4:
        dport = struct.unpack_from("!H", transport, 2)[0]
    return src, dst, proto, dport


def _addresses(header: bytes) -> tuple[IPAddress, IPAddress, int] | None:
    version = header[0] >> 4
    if version == 4 and len(header) >= 20:
        return (
            ipaddress.IPv4Address(header[12:16]),
            ipaddress.IPv4Address(header[16:20]),
            header[9],
        )
    if version == 6 and len(header) >= 40:
        return (
            ipaddress.IPv6Address(header[8:24]),
            ipaddress.IPv6Address(header[24:40]),
            header[6],
        )
    return None


class _Namespace:
    """The trace-group socket droptrace holds in one namespace, and its trace table.

    Tracing is one-shot per flow: a flow is traced until one verdict for it comes, then its
    verdict is reused for a while. The table exists only while some flow waits for its
    verdict, so a drop storm does not pay for a trace rule on every packet.
    """

    def __init__(self, ref: netns.NetnsRef, table: str) -> None:
        self.ref = ref
        self.table = table
        self.waiting: dict[FlowKey, float] = {}  # flow -> when its tracing started
        self.known: dict[FlowKey, Verdict] = {}  # flow -> its latest traced drop verdict
        self.packets: dict[int, Packet] = {}
        self.table_up = False
        self.last_start = -_START_GAP_S
        self.sock = netns.run_in(ref.path, _trace_socket)

    def trace(self, key: FlowKey, now: float) -> None:
        if key in self.waiting or len(self.waiting) >= _MAX_FLOWS:
            return
        if now - self.last_start < _START_GAP_S:
            return  # many new flows at once (a storm): a few are traced, the rest counted
        self.last_start = now
        ip = "ip" if key.src.version == 4 else "ip6"
        match = f"{ip} saddr {key.src} {ip} daddr {key.dst} meta l4proto {key.proto}"
        if key.dport is not None and key.proto in (6, 17, 132):
            match += f" th dport {key.dport}"
        script = "" if self.table_up else _table_script(self.table)
        script += "".join(
            f"add rule inet {self.table} {chain} {match} limit rate {_RATE} meta nftrace set 1\n"
            for chain in ("pre", "out")
        )
        ok, err = netns.run_command(self.ref.path, "nft", "-f", "-", stdin=script)
        if not ok and not self.table_up:
            raise OSError(f"cannot add nft table {self.table}: {err}")
        self.table_up = True
        self.waiting[key] = now  # also when the rule failed: do not retry on every drop

    def read(self, now: float) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: a burst overran the buffer; later packets still come
                continue
            for v in parse_verdicts(data, now, self.packets):
                key = FlowKey(v.src, v.dst, v.proto, v.dport)
                if len(self.known) > 4096:
                    self.known.clear()
                self.known[key] = v
                self.waiting.pop(key, None)
        for key, since in list(self.waiting.items()):
            if now - since > _WAIT_S:
                del self.waiting[key]  # no further packet of that flow came
        if self.table_up and not self.waiting:
            self.table_up = not remove_table(self.ref.path, self.table)

    def close(self) -> None:
        self.sock.close()
        if self.table_up:
            remove_table(self.ref.path, self.table)


def _trace_socket() -> socket.socket:
    # Created in the target namespace (run_in): a netlink socket hears its own namespace.
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((0, 1 << (_NFNLGRP_NFTRACE - 1)))
    return sock


def _table_script(table: str) -> str:
    # Priority -350: before conntrack (-200) and raw (-300), so every later rule is traced.
    return (
        f'add table inet {table} {{ comment "droptrace pid {os.getpid()}: traces flows'
        f' netfilter dropped; removed when droptrace exits"; }}\n'
        f"add chain inet {table} pre {{ type filter hook prerouting priority -350; }}\n"
        f"add chain inet {table} out {{ type filter hook output priority -350; }}\n"
    )


def remove_table(ns_path: Path, table: str) -> bool:
    return netns.run_command(ns_path, "nft", "delete", "table", "inet", table)[0]


def remove_stale() -> list[str]:
    """Remove the trace tables of droptrace runs that are gone; returns where it removed one."""
    removed: list[str] = []
    if not STATE_DIR.is_dir():
        return removed
    for state in STATE_DIR.glob("*"):
        pid = int(state.name) if state.name.isdigit() else 0
        if pid and Path(f"/proc/{pid}").exists():
            continue
        for line in state.read_text().splitlines():
            path = Path(line)
            # A namespace file that is gone took its tables with it.
            if path.exists() and remove_table(path, f"{_TABLE_PREFIX}{pid}"):
                removed.append(line)
        state.unlink(missing_ok=True)
    _remove_empty_state_dir()
    return removed


def _remove_empty_state_dir() -> None:
    """/run/droptrace/nftrace (and /run/droptrace) once no run has tables there."""
    for d in (STATE_DIR, STATE_DIR.parent):
        with contextlib.suppress(OSError):
            d.rmdir()


class NfTrace:
    """Trace verdicts per namespace; asks for a flow to be traced after netfilter drops it."""

    def __init__(self) -> None:
        self._table = f"{_TABLE_PREFIX}{os.getpid()}"
        self._state = STATE_DIR / str(os.getpid())
        self._spaces: dict[int, _Namespace | None] = {}  # None: nftrace unavailable there
        self.unavailable: dict[int, str] = {}
        remove_stale()

    def verdict(self, drop: Drop, ref: netns.NetnsRef) -> Verdict | None:
        """The traced drop verdict for this drop's packet, if one came; starts tracing if not."""
        key = _key(drop)
        if key is None:
            return None
        space = self._space(ref)
        if space is None:
            return None
        now = time.monotonic()
        space.read(now)
        known = space.known.get(key)
        if known is not None and now - known.seen < _KEEP_S:
            return known
        try:
            space.trace(key, now)
        except OSError as err:
            self.unavailable[ref.inode] = str(err)
            self._spaces[ref.inode] = None
            space.close()
        return None

    def _space(self, ref: netns.NetnsRef) -> _Namespace | None:
        if ref.inode in self._spaces:
            return self._spaces[ref.inode]
        self._remember(ref.path)  # before the table exists: a kill in between is cleaned up
        try:
            space: _Namespace | None = _Namespace(ref, self._table)
        except OSError as err:
            self.unavailable[ref.inode] = str(err)
            space = None
        self._spaces[ref.inode] = space
        return space

    def _remember(self, path: Path) -> None:
        for _ in range(3):  # another run may remove the empty directory in between
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            try:
                with self._state.open("a") as f:
                    f.write(f"{path}\n")
                return
            except FileNotFoundError:
                continue

    def close(self) -> None:
        for space in self._spaces.values():
            if space is not None:
                with contextlib.suppress(OSError):
                    space.close()
        self._spaces.clear()
        self._state.unlink(missing_ok=True)
        _remove_empty_state_dir()


class RuleTexts:
    """Rule text for a traced (family, table, chain, handle), from the namespace's ruleset.

    A rule iptables-nft wrote is given in its iptables-save form: the chain's rules are in
    the same order in both listings, so the handle's position finds the line.
    """

    _HANDLE = re.compile(r"^\s+(.*?) # handle (\d+)$")

    def __init__(self) -> None:
        self._cache: dict[tuple[object, ...], tuple[float, Rule]] = {}

    def rule(self, ns_path: Path, v: Verdict) -> Rule:
        key = (str(ns_path), v.family, v.table, v.chain, v.handle)
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < 2.0:
            return hit[1]
        rule = self._read(ns_path, v)
        self._cache[key] = (time.monotonic(), rule)
        return rule

    def _read(self, ns_path: Path, v: Verdict) -> Rule:
        listing = netns.command(ns_path, "nft", "-a", "list", "chain", v.family, v.table, v.chain)
        handles, bodies = [], {}
        policy = ""
        for line in listing.splitlines():
            m = self._HANDLE.match(line)
            if m and not line.lstrip().startswith(("table ", "chain ")):
                handles.append(int(m.group(2)))
                bodies[int(m.group(2))] = m.group(1)
            elif "policy" in line:
                policy = line.strip().rstrip(";")
        if v.handle is None:
            return Rule(f"nft {v.family}", v.table, v.chain, policy or "policy drop", None, None)
        saved = self._iptables_form(ns_path, v, handles)
        if saved is not None:
            return saved
        body = bodies.get(v.handle, f"rule handle {v.handle}")
        comment = re.search(r'comment "([^"]*)"', body)
        return Rule(
            f"nft {v.family}",
            v.table,
            v.chain,
            body,
            v.handle,
            comment.group(1) if comment else None,
        )

    @staticmethod
    def _iptables_form(ns_path: Path, v: Verdict, handles: list[int]) -> Rule | None:
        if v.family not in _IPTABLES_FAMILY or v.handle not in handles:
            return None
        tool, family = _IPTABLES_FAMILY[v.family]
        save = netns.command(ns_path, tool, "-t", v.table)
        lines = [ln for ln in save.splitlines() if ln.startswith(f"-A {v.chain} ")]
        if len(lines) != len(handles):
            return None  # not (only) iptables-nft's rules: keep the nft form
        line = lines[handles.index(v.handle)]
        return Rule(family, v.table, v.chain, line, v.handle, comment_of(line))
