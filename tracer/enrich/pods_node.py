"""The pods this node runs, from facts that need no API server.

A node whose network is broken is exactly where droptrace is needed, so pods are named
from the node itself: a process in a network namespace -> its cgroup (kubelet puts every
pod under `kubepods…pod<uid>…`; its systemd driver writes the uid's dashes as
underscores) -> the pod UID. The name is the sandbox's UTS hostname (kubelet sets it to
the pod name), the namespace the `namespace` file kubelet projects into the pod's
service-account volume under <kubelet root>/pods/<uid>/ (else kubelet's log directory
/var/log/pods/<namespace>_<name>_<uid>), the IPs the addresses in the namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, replace
from ipaddress import ip_address
from pathlib import Path

from tracer.enrich.podtypes import Pod
from tracer.model import IPAddress
from tracer.system import netns
from tracer.system.netlink import IPRoute, NetlinkError

KUBELET_ROOT = Path("/var/lib/kubelet")
KUBELET_ROOT_ENV = "DROPTRACE_KUBELET_ROOT"
# More kubelet roots, one symlink each: a kubelet run with another --root-dir, or pods laid
# out the kubelet's way by something else (the lab registers its own while it has pods).
EXTRA_KUBELET_ROOTS = Path("/run/droptrace/kubelet-roots")
POD_LOG_ROOT = Path("/var/log/pods")
_UID = re.compile(
    r"pod([0-9a-f]{8}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{12})"
)
RESCAN_INTERVAL = 1.0


def kubelet_roots() -> tuple[Path, ...]:
    """$DROPTRACE_KUBELET_ROOT if set, else the kubelet's and the registered ones."""
    override = os.environ.get(KUBELET_ROOT_ENV)
    if override:
        return (Path(override),)
    try:
        extra = sorted(EXTRA_KUBELET_ROOTS.iterdir())
    except OSError:
        extra = []
    return (KUBELET_ROOT, *extra)


def pod_uid(cgroup_text: str) -> str | None:
    """The pod UID in a /proc/PID/cgroup, or None for a process outside kubepods."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        if "kubepods" not in path:
            continue
        found = _UID.findall(path)
        if found:
            return str(found[-1]).replace("_", "-")
    return None


def _namespace_of(uid: str) -> str | None:
    for root in kubelet_roots():
        volumes = root / "pods" / uid / "volumes"
        for f in sorted(volumes.glob("kubernetes.io~projected/*/namespace")):
            with contextlib.suppress(OSError):
                ns = f.read_text().strip()
                if ns:
                    return ns
    with contextlib.suppress(OSError):
        for d in POD_LOG_ROOT.glob(f"*_{uid}"):
            return d.name.split("_", 1)[0]
    return None


def _hostname(pid: int) -> str | None:
    try:
        return netns.run_in(Path(f"/proc/{pid}/ns/uts"), socket.gethostname, netns.CLONE_NEWUTS)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class _Links:
    ips: tuple[IPAddress, ...]
    # (peer ifindex, nsid of the peer's namespace as the pod's namespace numbers it)
    peers: tuple[tuple[int, int], ...]


def pod_links(path: Path) -> _Links:
    def read() -> _Links:
        with IPRoute() as ipr:
            ips = tuple(
                ip_address(a.get_attr("IFA_ADDRESS"))
                for a in ipr.get_addr()
                if a["scope"] == 0 and a.get_attr("IFA_ADDRESS")
            )
            peers = tuple(
                (int(link.get_attr("IFLA_LINK")), int(link.get_attr("IFLA_LINK_NETNSID")))
                for link in ipr.get_links()
                if link.get_attr("IFLA_LINK") and link.get_attr("IFLA_LINK_NETNSID") is not None
            )
        return _Links(tuple(a for a in ips if not a.is_loopback), peers)

    return netns.run_in(path, read)


def host_iface(pod_path: Path, pod_inode: int, peers: tuple[tuple[int, int], ...]) -> str | None:
    """The node-side end of the pod's veth. Interface indexes repeat across namespaces, so
    the peer's namespace is found by the nsid the pod's namespace gave it (RTM_GETNSID)."""
    if not peers:
        return None
    candidates = [r for r in netns.NetnsNames().all() if r.inode != pod_inode]

    def peer_netns() -> tuple[netns.NetnsRef, int] | None:
        with IPRoute() as ipr:
            for ref in sorted(candidates, key=lambda r: r.name != "host"):
                try:
                    fd = os.open(ref.path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    nsid = (ipr.get_netnsid(fd=fd) or {}).get("nsid")
                finally:
                    os.close(fd)
                for index, peer_nsid in peers:
                    if nsid is not None and nsid == peer_nsid:
                        return ref, index
        return None

    def name_of(index: int) -> str | None:
        with IPRoute() as ipr:
            links = ipr.get_links(index)
            return str(links[0].get_attr("IFLA_IFNAME")) if links else None

    with contextlib.suppress(OSError, NetlinkError):
        found = netns.run_in(pod_path, peer_netns)
        if found is not None:
            ref, index = found
            return netns.run_in(ref.path, lambda: name_of(index))
    return None


class PodCache:
    """uid -> Pod for the pods running on this node, as one source sees them: rescanned on
    a miss, at most once a second; a hit is checked to be alive first, since a deleted
    pod's IP is reused by the next one. A source fills `_pods` and `_by_ip` in scan() and
    says in _alive() whether a pod it found is still there."""

    def __init__(self) -> None:
        self._pods: dict[str, Pod] = {}
        self._by_ip: dict[IPAddress, str] = {}
        self._scanned = 0.0  # when to rescan is measured from here
        self._host_inode = netns.inode_of(netns.HOST_NETNS)
        # One scan at a time: a lookup from another thread (serve's scrapes, the counters)
        # during a scan waits for its result instead of finding a rescan "too recent".
        self._scan_lock = threading.Lock()

    def scan(self) -> None:
        raise NotImplementedError

    def _alive(self, uid: str) -> bool:
        raise NotImplementedError

    def _maybe_scan(self) -> None:
        with self._scan_lock:
            if time.monotonic() - self._scanned >= RESCAN_INTERVAL:
                self.scan()

    def _live(self, uid: str | None) -> Pod | None:
        return self._pods.get(uid) if uid is not None and self._alive(uid) else None

    def by_ip(self, ip: IPAddress) -> Pod | None:
        pod = self._live(self._by_ip.get(ip))
        if pod is None:
            self._maybe_scan()
            pod = self._live(self._by_ip.get(ip))
        return pod

    def by_uid(self, uid: str) -> Pod | None:
        pod = self._live(uid)
        if pod is None:
            self._maybe_scan()
            pod = self._live(uid)
        return pod

    def is_pod_netns(self, inode: int) -> bool:
        """Whether a network namespace is one of the pods' seen by the last scan."""
        self._maybe_scan()
        return any(p.netns_inode == inode for p in self._pods.values())

    def by_netns(self, inode: int) -> Pod | None:
        """The pod whose network namespace this is, as of the last scan."""
        self._maybe_scan()
        return next((p for p in self._pods.values() if p.netns_inode == inode), None)

    def all(self) -> list[Pod]:
        with self._scan_lock:
            self.scan()
        return list(self._pods.values())


class NodePods(PodCache):
    """The pods running on this node, from /proc, cgroups and kubelet's directories."""

    def __init__(self) -> None:
        super().__init__()
        self._pids: dict[str, int] = {}

    def _processes(self) -> dict[str, int]:
        """uid -> the lowest pid of that pod outside the host's network namespace."""
        found: dict[str, int] = {}
        for d in sorted(Path("/proc").iterdir(), key=lambda p: (len(p.name), p.name)):
            if not d.name.isdigit():
                continue
            try:
                uid = pod_uid((d / "cgroup").read_text())
                if uid is None or uid in found:
                    continue
                if netns.inode_of(d / "ns" / "net") == self._host_inode:
                    continue  # hostNetwork pods: their addresses are the node's
            except OSError:
                continue
            found[uid] = int(d.name)
        return found

    def scan(self) -> None:
        self._scanned = time.monotonic()
        pods: dict[str, Pod] = {}
        pids = self._processes()
        for uid, pid in pids.items():
            pod = self._pods.get(uid)
            path = Path(f"/proc/{pid}/ns/net")
            try:
                inode = netns.inode_of(path)
            except OSError:
                continue
            if pod is not None and pod.netns_inode == inode:
                pods[uid] = replace(pod, netns_path=path)
                continue
            name = _hostname(pid)
            namespace = _namespace_of(uid)
            if name is None:
                continue
            try:
                links = pod_links(path)
            except (OSError, NetlinkError):
                continue
            pods[uid] = Pod(
                namespace=namespace or "?",
                name=name,
                uid=uid,
                ips=links.ips,
                netns_inode=inode,
                netns_path=path,
                host_iface=host_iface(path, inode, links.peers),
            )
        self._pods, self._pids = pods, pids
        self._by_ip = {ip: uid for uid, p in pods.items() for ip in p.ips}

    def _alive(self, uid: str) -> bool:
        pod, pid = self._pods.get(uid), self._pids.get(uid)
        if pod is None or pid is None:
            return False
        try:
            return netns.inode_of(Path(f"/proc/{pid}/ns/net")) == pod.netns_inode
        except OSError:
            return False
