"""Whose packet: the pod (and service) an address belongs to, from every source there is.

Sources, in order of preference, each optional: the Kubernetes API (kubeconfig or
in-cluster), then the node's CRI runtime socket (pods_cri), then node-local facts
(pods_node; services from kube-proxy's rules, services_node). The API names every pod of
the cluster; the runtime and the node name this node's, with their network namespaces.
An absent source is told once, in `notes`, and never stops droptrace.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path

from tracer.enrich.pods_api import ApiPods, ApiUnavailable
from tracer.enrich.pods_cri import CriPods, CriUnavailable
from tracer.enrich.pods_node import NodePods, pod_uid
from tracer.enrich.podtypes import Pod, Service
from tracer.enrich.services_node import NodeServices
from tracer.errors import AmbiguousPod, UnknownPod
from tracer.model import IPAddress


class PodIdentity:
    def __init__(
        self, api: ApiPods | None = None, node: NodePods | None = None, cri: CriPods | None = None
    ) -> None:
        self.api = api
        self.cri = cri
        self.node = node or NodePods()
        self.node_services = NodeServices(self.is_pod_netns)
        self.notes: list[str] = []
        self.no_api = "Kubernetes API not asked"  # why, for an unknown --pod's one line

    @classmethod
    def connect(cls) -> PodIdentity:
        """Every source that answers; what is missing is told in one note."""
        api: ApiPods | None = None
        cri: CriPods | None = None
        missing = []
        try:
            api = ApiPods()
        except ApiUnavailable as err:
            missing.append(f"Kubernetes API not used: {err}")
        except ImportError as err:  # pragma: no cover - lightkube is a dependency
            missing.append(f"Kubernetes API not used: lightkube missing ({err})")
        try:
            cri = CriPods.connect()
        except CriUnavailable as err:
            missing.append(f"no CRI runtime ({err})")
        except Exception as err:  # e.g. grpcio-tools missing: the source is off, not droptrace
            missing.append(f"no CRI runtime (its client failed: {err})")
        me = cls(api, cri=cri)
        if api is None:
            me.no_api = "; ".join(missing)
        if missing:
            if api is not None:
                rest = "from the Kubernetes API"
            elif cri is not None:
                rest = "from the CRI runtime"
            else:
                rest = "from node-local facts"
            me.notes.append(f"{'; '.join(missing)}; naming pods {rest}")
        return me

    def _local(self, uid: str) -> Pod | None:
        """This node's view of a pod (its network namespace, its host veth), if it runs here."""
        local = self.cri.by_uid(uid) if self.cri is not None else None
        return local or self.node.by_uid(uid)

    @staticmethod
    def _placed(pod: Pod, local: Pod | None) -> Pod:
        """The API's pod with where it runs on this node, as the runtime or node tells."""
        if local is None:
            return pod
        return replace(
            pod,
            netns_inode=local.netns_inode,
            netns_path=local.netns_path,
            host_iface=local.host_iface,
        )

    def by_ip(self, ip: IPAddress, at_ns: int | None = None) -> Pod | None:
        """The pod with this address; with `at_ns` (a drop's CLOCK_MONOTONIC time), the one
        that had it then, where the API says an address changed hands since."""
        if self.api is not None:
            pod = self.api.by_ip(ip, at_ns)
            if pod is not None:
                return self._placed(pod, self._local(pod.uid))
        if self.cri is not None:
            pod = self.cri.by_ip(ip)
            if pod is not None:
                return pod
        return self.node.by_ip(ip)

    def of_process(self, pid: int) -> str | None:
        """`namespace/name` of the pod a process runs in (its cgroup names the pod UID)."""
        try:
            uid = pod_uid(Path(f"/proc/{pid}/cgroup").read_text())
        except OSError:
            return None
        if uid is None:
            return None
        pod = self._local(uid)
        if pod is None and self.api is not None:
            pod = next((p for p in self.api.all() if p.uid == uid), None)
        return pod.ref if pod else None

    def by_netns(self, inode: int) -> Pod | None:
        """The pod on this node whose network namespace this is."""
        pod = self.cri.by_netns(inode) if self.cri is not None else None
        return pod or self.node.by_netns(inode)

    def is_pod_netns(self, inode: int) -> bool:
        """Whether a network namespace is a pod's on this node."""
        if self.cri is not None and self.cri.is_pod_netns(inode):
            return True
        return self.node.is_pod_netns(inode)

    def any_service(self) -> bool:
        """Whether any service is known: else no address can name one."""
        return (self.api is not None and self.api.any_service()) or self.node_services.any()

    def service(self, ip: IPAddress) -> Service | None:
        svc = self.api.service(ip) if self.api is not None else None
        return svc or self.node_services.service(ip)

    def _all(self) -> list[Pod]:
        pods = {p.uid: p for p in self.node.all()}
        if self.cri is not None:
            pods.update((p.uid, p) for p in self.cri.all())
        if self.api is not None:
            for p in self.api.all():
                pods[p.uid] = self._placed(p, pods.get(p.uid))
        return list(pods.values())

    def resolve(self, name: str, namespace: str | None = None) -> Pod:
        """The one pod called `name` (in `namespace` if given); else a one-line error."""
        pods = self._all()
        hits = [p for p in pods if p.name == name and namespace in (None, p.namespace)]
        if len({p.ref for p in hits}) > 1:
            refs = ", ".join(sorted({p.ref for p in hits}))
            raise AmbiguousPod(f"pod {name!r} is in several namespaces ({refs}); pick one with -n")
        if hits:
            return hits[0]
        where = f" in namespace {namespace!r}" if namespace else ""
        elsewhere = sorted({p.ref for p in pods if p.name == name})
        scope = [p for p in pods if namespace in (None, p.namespace)]
        close = difflib.get_close_matches(name, sorted({p.name for p in scope}), n=3)
        if elsewhere:
            hint = f"; it is in {', '.join(elsewhere)}"
        elif close:
            hint = f"; did you mean {', '.join(close)}?"
        else:
            hint = ""
        source = "known to the API or on this node" if self.api else f"on this node ({self.no_api})"
        raise UnknownPod(f"no pod {name!r}{where} {source}{hint}")
