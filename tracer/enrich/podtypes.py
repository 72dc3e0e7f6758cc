"""What droptrace knows about a pod or a service, whichever source told it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracer.model import IPAddress


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    uid: str
    ips: tuple[IPAddress, ...]
    # Known only for pods on this node (node-local facts):
    netns_inode: int | None = None
    netns_path: Path | None = None
    host_iface: str | None = None  # the node-side end of the pod's veth

    @property
    def ref(self) -> str:
        """`namespace/name`, as kubectl and the JSON output write it."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    cluster_ips: tuple[IPAddress, ...]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"
