"""Network namespaces: names for inodes, and running code inside a namespace.

Python 3.11 has no os.setns, and pyroute2's netns= support creates a missing namespace
(O_CREAT) and forks a helper; a short-lived thread that setns()s itself does neither and
leaves the rest of the process where it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tracer.errors import UnknownNetns

NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))
HOST_NETNS = Path("/proc/self/ns/net")  # the namespace droptrace runs in
_CLONE_NEWNET = 0x40000000
_NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), linux/nsfs.h (4.11+)
CLONE_NEWUTS = 0x04000000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NetnsRef:
    inode: int
    name: str
    path: Path


def inode_of(path: Path) -> int:
    return os.stat(path).st_ino


def resolve(spec: str) -> NetnsRef:
    """A namespace given as an `ip netns` name, a path (/proc/PID/ns/net) or 'host'."""
    if spec == "host":
        return NetnsRef(inode_of(HOST_NETNS), "host", HOST_NETNS)
    if not spec:
        raise UnknownNetns("--netns needs a name or a path (see `ip netns list`)")
    candidates = [Path(spec)] if "/" in spec else [d / spec for d in NETNS_DIRS]
    for path in candidates:
        try:
            ino = inode_of(path)
        except OSError:
            continue
        if _is_net_namespace(path):
            return NetnsRef(ino, path.name if "/" not in spec else spec, path)
        if "/" in spec:
            raise UnknownNetns(f"{spec} is not a network namespace")
    raise UnknownNetns(f"unknown network namespace {spec!r} (see `ip netns list`)")


def _is_net_namespace(path: Path) -> bool:
    """Whether `path` is a network namespace: a regular nsfs file (so opening it cannot
    block, as a FIFO would) that the kernel says is of type CLONE_NEWNET. An unmounted
    leftover in /run/netns, /proc/cpuinfo or /proc/self/ns/mnt is not."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, _NS_GET_NSTYPE) == _CLONE_NEWNET
    except OSError:  # ENOTTY: not an nsfs file
        return False
    finally:
        os.close(fd)


def run_in(path: Path, fn: Callable[[], T], nstype: int = _CLONE_NEWNET) -> T:
    """Run fn in a thread that has entered the namespace at `path`; return its result.

    `nstype` is the namespace kind (network by default; CLONE_NEWUTS for a hostname).
    """
    result: list[T] = []
    error: list[BaseException] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(fd, nstype) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {path} failed")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed back to the caller's thread
            error.append(exc)

    t = threading.Thread(target=work, name=f"netns:{path}")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def command(ns_path: Path | None, *cmd: str, stdin: str | None = None) -> str:
    """stdout of a command run inside the namespace ("" if it is missing or fails)."""
    ok, out = run_command(ns_path, *cmd, stdin=stdin)
    return out if ok else ""


def run_command(ns_path: Path | None, *cmd: str, stdin: str | None = None) -> tuple[bool, str]:
    """(succeeded, stdout or else stderr) of a command run inside the namespace."""
    if shutil.which(cmd[0]) is None:
        return False, f"{cmd[0]} is not installed"
    full = ["nsenter", f"--net={ns_path}", *cmd] if ns_path else list(cmd)
    try:
        p = subprocess.run(full, capture_output=True, text=True, timeout=10, input=stdin)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, str(err)
    return (True, p.stdout) if p.returncode == 0 else (False, p.stderr.strip())


class NetnsNames:
    """inode -> display name: the `ip netns` name, 'host', else 'pid:N', else 'netns:INODE'."""

    RESCAN_INTERVAL = 1.0
    # Namespaces remembered at most: on a node where pods come and go, the gone ones'
    # entries are let go (a namespace still there is found again by the next scan).
    MAX_NAMESPACES = 4096

    def __init__(self) -> None:
        self._refs: dict[int, NetnsRef] = {}
        self._missed: dict[int, float] = {}  # inode -> when a rescan last failed to name it
        self._checked: dict[int, float] = {}  # inode -> when its path last still had it
        self._scan()

    def _scan(self) -> None:
        refs: dict[int, NetnsRef] = {}
        with contextlib.suppress(OSError):
            refs[inode_of(HOST_NETNS)] = NetnsRef(inode_of(HOST_NETNS), "host", HOST_NETNS)
        for d in NETNS_DIRS:
            try:
                entries = sorted(d.iterdir())
            except OSError:
                continue
            for p in entries:
                try:
                    refs.setdefault(inode_of(p), NetnsRef(inode_of(p), p.name, p))
                except OSError:
                    continue
        self._refs.update(refs)
        if len(self._refs) > self.MAX_NAMESPACES:
            self._refs = refs
        for seen in (self._missed, self._checked):
            if len(seen) > self.MAX_NAMESPACES:
                seen.clear()

    def _scan_pids(self, inode: int) -> NetnsRef | None:
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            p = pid_dir / "ns" / "net"
            try:
                if inode_of(p) == inode:
                    return NetnsRef(inode, f"pid:{pid_dir.name}", p)
            except OSError:
                continue
        return None

    def lookup(self, inode: int) -> NetnsRef | None:
        """The namespace with this inode; an unknown one is looked for again at most once a
        second (namespaces come and go, and a storm must not rescan /proc per packet)."""
        ref = self._refs.get(inode)
        now = time.monotonic()
        if ref is not None:
            # Inode numbers are reused: the name holds only while its path still has that inode.
            # Checked at most once a second: a storm asks several times per drop.
            if now - self._checked.get(inode, -1e9) < self.RESCAN_INTERVAL:
                return ref
            with contextlib.suppress(OSError):
                if inode_of(ref.path) == inode:
                    self._checked[inode] = now
                    return ref
        if now - self._missed.get(inode, 0.0) < self.RESCAN_INTERVAL:
            return None
        self._refs.pop(inode, None)
        self._scan()
        ref = self._refs.get(inode) or self._scan_pids(inode)
        if ref is None:
            self._missed[inode] = now
        else:
            self._refs[inode] = ref
        return ref

    def lookup_host(self) -> int:
        return inode_of(HOST_NETNS)

    def all(self) -> list[NetnsRef]:
        """The host and every named namespace, freshly listed."""
        self._scan()
        return [r for r in self._refs.values() if not r.name.startswith("pid:") and r.path.exists()]

    def name(self, inode: int) -> str:
        if not inode:
            return "unknown"
        ref = self.lookup(inode)
        return ref.name if ref else f"netns:{inode}"
