"""Whose packet: the pod (and service) an address belongs to, from every source there is.

Sources, in order of preference, each optional: the Kubernetes API (kubeconfig or
in-cluster), then node-local facts (pods_node; services from kube-proxy's rules,
services_node). The CRI runtime socket is not asked: the
node-local facts already give each local pod's netns, and need no socket protocol.
An absent source is told once, in `notes`, and never stops droptrace.
"""

from __future__ import annotations

import difflib
from dataclasses import replace

from tracer.enrich.pods_api import ApiPods, ApiUnavailable
from tracer.enrich.pods_node import NodePods
from tracer.enrich.podtypes import Pod, Service
from tracer.enrich.services_node import NodeServices
from tracer.errors import AmbiguousPod, UnknownPod
from tracer.model import IPAddress


class PodIdentity:
    def __init__(self, api: ApiPods | None = None, node: NodePods | None = None) -> None:
        self.api = api
        self.node = node or NodePods()
        self.node_services = NodeServices(self.node.is_pod_netns)
        self.notes: list[str] = []
        self.no_api = "Kubernetes API not asked"  # why, for an unknown --pod's one line

    @classmethod
    def connect(cls) -> PodIdentity:
        """Every source that answers; what is missing becomes one note each."""
        api: ApiPods | None = None
        why = None
        try:
            api = ApiPods()
        except ApiUnavailable as err:
            why = str(err)
        except ImportError as err:  # pragma: no cover - lightkube is a dependency
            why = f"lightkube missing ({err})"
        me = cls(api)
        if why:
            me.no_api = f"Kubernetes API not used: {why}"
            me.notes.append(f"{me.no_api}; naming pods from node-local facts")
        return me

    def by_ip(self, ip: IPAddress) -> Pod | None:
        if self.api is not None:
            pod = self.api.by_ip(ip)
            if pod is not None:
                local = self.node.by_uid(pod.uid)
                if local is not None:  # the API names it, the node knows where it runs
                    return replace(
                        pod,
                        netns_inode=local.netns_inode,
                        netns_path=local.netns_path,
                        host_iface=local.host_iface,
                    )
                return pod
        return self.node.by_ip(ip)

    def service(self, ip: IPAddress) -> Service | None:
        svc = self.api.service(ip) if self.api is not None else None
        return svc or self.node_services.service(ip)

    def _all(self) -> list[Pod]:
        pods = {p.uid: p for p in self.node.all()}
        if self.api is not None:
            for p in self.api.all():
                local = pods.get(p.uid)
                pods[p.uid] = (
                    replace(p, netns_inode=local.netns_inode, netns_path=local.netns_path)
                    if local
                    else p
                )
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
