"""The trace tables droptrace adds to a namespace, the trace-group socket it reads there,
and their removal on every exit (and, for a killed run, on the next start)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from tracer.model import Drop
from tracer.nftrace.codec import TABLE_PREFIX, FlowKey, Packet, Verdict, flow_key, parse_verdicts
from tracer.system import netns

STATE_DIR = Path("/run/droptrace/nftrace")
_NFNLGRP_NFTRACE = 9
_KEEP_S = 10.0  # how long a flow's traced verdict names its drops before it is traced again
_WAIT_S = 5.0  # how long a flow is traced waiting for another packet
_MAX_FLOWS = 16  # flows traced at once per namespace
MAX_KNOWN = 4096  # verdicts kept per namespace: a storm of many flows stays bounded
# Namespaces traced at once: each holds a socket, which holds its namespace alive, so on a
# node where pods come and go the least recently used is let go (and one that was deleted).
MAX_NAMESPACES = 64
_SWEEP_S = 10.0
_START_GAP_S = 0.2  # at most 5 flows a second start being traced per namespace
_RATE = "5/second"  # traced packets per flow: bounds the trace messages in a drop storm


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
                if len(self.known) >= MAX_KNOWN:
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


def _gone(ref: netns.NetnsRef) -> bool:
    """Whether the namespace's name or path is gone (our socket alone may keep it alive)."""
    try:
        return netns.inode_of(ref.path) != ref.inode
    except OSError:
        return True


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
            if path.exists() and remove_table(path, f"{TABLE_PREFIX}{pid}"):
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
        self._table = f"{TABLE_PREFIX}{os.getpid()}"
        self._state = STATE_DIR / str(os.getpid())
        # inode -> its namespace, least recently used first; None: nftrace unavailable there.
        self._spaces: dict[int, _Namespace | None] = {}
        self.unavailable: dict[int, str] = {}
        self._swept = time.monotonic()
        remove_stale()

    def verdict(self, drop: Drop, ref: netns.NetnsRef) -> Verdict | None:
        """The traced drop verdict for this drop's packet, if one came; starts tracing if not."""
        key = flow_key(drop)
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
        if time.monotonic() - self._swept > _SWEEP_S:
            self._swept = time.monotonic()
            for inode in [i for i, s in self._spaces.items() if s is not None and _gone(s.ref)]:
                self._let_go(inode)
        if ref.inode in self._spaces:
            space = self._spaces.pop(ref.inode)
            self._spaces[ref.inode] = space  # now the most recently used
            return space
        self._remember(ref.path)  # before the table exists: a kill in between is cleaned up
        try:
            space = _Namespace(ref, self._table)
        except OSError as err:
            self.unavailable[ref.inode] = str(err)
            space = None
        while len(self._spaces) >= MAX_NAMESPACES:
            self._let_go(next(iter(self._spaces)))
        self._spaces[ref.inode] = space
        return space

    def _let_go(self, inode: int) -> None:
        space = self._spaces.pop(inode)
        self.unavailable.pop(inode, None)
        if space is not None:
            with contextlib.suppress(OSError):
                space.close()

    def __len__(self) -> int:
        return len(self._spaces)

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
