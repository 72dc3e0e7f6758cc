"""The pods this node runs, as its CRI runtime (containerd, CRI-O) tells them.

The runtime knows each pod sandbox's name, namespace and UID as kubelet gave them, its IPs
as the CNI plugin returned them, and (in the verbose status every CRI runtime fills) the
sandbox's pid and OCI runtime spec, whose network namespace path is where the pod's drops
happen. Needs no API server, and, unlike the node-local facts, no kubelet directories and
no process of the pod visible in /proc: only the runtime's socket.

The gRPC client is grpcio; the messages come from cri.proto (the fields droptrace reads),
generated at build time (`make cri`: tracer._cri), loaded when first needed, so a host
without a CRI socket never imports gRPC.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from types import ModuleType
from typing import Any

from tracer.enrich.pods_node import PodCache, host_iface, pod_links
from tracer.enrich.podtypes import Pod
from tracer.model import IPAddress
from tracer.system import netns
from tracer.system.netlink import NetlinkError

CRI_SOCKET_ENV = "DROPTRACE_CRI_SOCKET"
# Where containerd, CRI-O and k3s's containerd listen by default.
DEFAULT_SOCKETS = (
    Path("/run/containerd/containerd.sock"),
    Path("/run/crio/crio.sock"),
    Path("/run/k3s/containerd/containerd.sock"),
)
TIMEOUT = 2.0  # seconds per call: a hung runtime must not hold up droptrace
BACKOFF = 10.0  # seconds without asking a runtime that failed to answer


class CriUnavailable(Exception):
    """No CRI runtime answered; the message says why, in a few words."""


@dataclass(frozen=True, slots=True)
class _Api:
    grpc: ModuleType
    pb: Any  # the compiled messages (runtime.v1)
    services: Any


_api: _Api | None = None


def api() -> _Api:
    """grpc and the compiled cri.proto, loaded once."""
    global _api
    if _api is None:
        import grpc

        try:  # generated at build (`make cri`, and into every wheel)
            pb = importlib.import_module("tracer._cri.cri_pb2")
            services = importlib.import_module("tracer._cri.cri_pb2_grpc")
        except Exception:  # not built, or built for another grpc/protobuf (the modules
            # refuse to load then): compile the .proto now (grpcio-tools).
            # protos_and_services() finds a .proto relative to a sys.path entry: the
            # directory holding the `tracer` package, which an editable install need not
            # put there.
            root = str(Path(__file__).resolve().parents[2])
            if root not in sys.path:
                sys.path.append(root)
            pb, services = grpc.protos_and_services("tracer/enrich/cri.proto")
        _api = _Api(grpc, pb, services)
    return _api


def socket_candidates() -> tuple[Path, ...]:
    """$DROPTRACE_CRI_SOCKET if set (a path or unix:// address), else the usual ones."""
    override = os.environ.get(CRI_SOCKET_ENV)
    if override:
        return (Path(override.removeprefix("unix://")),)
    return DEFAULT_SOCKETS


def netns_path_of(info_json: str) -> Path | None:
    """The network namespace a verbose PodSandboxStatus's "info" names: the spec's path
    (containerd and CRI-O pin it under /var/run/netns), else the sandbox process's."""
    try:
        info = json.loads(info_json)
    except ValueError:
        return None
    if not isinstance(info, dict):
        return None
    linux = (info.get("runtimeSpec") or {}).get("linux") or {}
    for ns in linux.get("namespaces") or []:
        if isinstance(ns, dict) and ns.get("type") == "network" and ns.get("path"):
            path = Path(ns["path"])
            if path.exists():
                return path
    pid = info.get("pid")
    if isinstance(pid, int) and pid > 0:
        return Path(f"/proc/{pid}/ns/net")
    return None


class CriPods(PodCache):
    """The ready pod sandboxes of one CRI runtime; a sandbox already known is not asked for
    its status again."""

    def __init__(self, socket: Path) -> None:
        a = api()
        self.socket = socket
        self._channel = a.grpc.insecure_channel(f"unix://{socket}")
        self._rt = a.services.RuntimeServiceStub(self._channel)
        try:
            v = self._rt.Version(a.pb.VersionRequest(version="v1"), timeout=TIMEOUT)
        except a.grpc.RpcError as err:
            self._channel.close()
            raise CriUnavailable(f"{socket}: {err.code().name.lower()}") from None
        self.runtime = f"{v.runtime_name} {v.runtime_version}"
        super().__init__()
        self._sandboxes: dict[str, Pod | None] = {}  # sandbox id -> pod (None: host network)

    @classmethod
    def connect(cls) -> CriPods:
        tried = socket_candidates()
        present = [p for p in tried if p.is_socket()]
        if not present:
            raise CriUnavailable(f"no socket at {', '.join(map(str, tried))}")
        why = []
        for path in present:
            try:
                return cls(path)
            except CriUnavailable as err:
                why.append(str(err))
        raise CriUnavailable("; ".join(why))

    def close(self) -> None:
        self._channel.close()

    def _pod(self, status: Any, info: str) -> Pod | None:
        meta = status.metadata
        path = netns_path_of(info)
        if path is None:
            return None
        try:
            inode = netns.inode_of(path)
        except OSError:
            return None
        if inode == self._host_inode:
            return None  # hostNetwork: its addresses are the node's
        addrs: list[IPAddress] = []
        for text in (status.network.ip, *(x.ip for x in status.network.additional_ips)):
            with contextlib.suppress(ValueError):
                addrs.append(ip_address(text))
        try:
            links = pod_links(path)
        except (OSError, NetlinkError):
            links = None
        return Pod(
            namespace=meta.namespace,
            name=meta.name,
            uid=meta.uid,
            ips=tuple(addrs) or (links.ips if links else ()),
            netns_inode=inode,
            netns_path=path,
            host_iface=host_iface(path, inode, links.peers) if links else None,
        )

    def scan(self) -> None:
        """Lists the ready sandboxes. A runtime that fails to answer keeps the last list and
        is not asked again for BACKOFF seconds: drops are explained on one thread, which a
        hung runtime must not hold up for a call timeout on every unknown address."""
        a = api()
        self._scanned = time.monotonic()
        ready = a.pb.PodSandboxFilter(state=a.pb.PodSandboxStateValue(state=a.pb.SANDBOX_READY))
        try:
            items = self._rt.ListPodSandbox(
                a.pb.ListPodSandboxRequest(filter=ready), timeout=TIMEOUT
            ).items
        except a.grpc.RpcError:
            self._scanned += BACKOFF
            return
        found: dict[str, Pod | None] = {}
        for item in items:
            if item.id in self._sandboxes:
                known = self._sandboxes[item.id]
                if known is None or self._same_netns(known):  # None: not a pod network
                    found[item.id] = known
                    continue
            try:
                resp = self._rt.PodSandboxStatus(
                    a.pb.PodSandboxStatusRequest(pod_sandbox_id=item.id, verbose=True),
                    timeout=TIMEOUT,
                )
            except a.grpc.RpcError as err:
                if err.code() == a.grpc.StatusCode.NOT_FOUND:
                    continue  # removed since the list
                self._scanned += BACKOFF
                break
            try:
                found[item.id] = self._pod(resp.status, resp.info.get("info", ""))
            except (AttributeError, TypeError):  # an "info" of another shape: not named
                found[item.id] = None
        self._sandboxes = found
        pods = [p for p in found.values() if p is not None]
        self._pods = {p.uid: p for p in pods}
        self._by_ip = {ip: p.uid for p in pods for ip in p.ips}

    @staticmethod
    def _same_netns(pod: Pod) -> bool:
        """Whether the pod's namespace is still the one it had (a removed sandbox's pinned
        path is gone, its pid reused)."""
        if pod.netns_path is None:
            return False
        try:
            return netns.inode_of(pod.netns_path) == pod.netns_inode
        except OSError:
            return False

    def _alive(self, uid: str) -> bool:
        pod = self._pods.get(uid)
        return pod is not None and self._same_netns(pod)
