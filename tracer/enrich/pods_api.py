"""Pods and services from the Kubernetes API (lightkube): list once, then keep the IP ->
pod and IP -> service maps current from watches, so a reused IP names its new owner."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from ipaddress import ip_address
from typing import Any

from tracer.enrich.podtypes import Pod, Service
from tracer.model import IPAddress
from tracer.system.kubeconfig import configured

# Pods that hold no IP any more; their addresses may already belong to another pod.
_FINISHED = ("Succeeded", "Failed")
_CONNECT_TIMEOUT_S = 3.0
_PAST_NS = 60 * 10**9  # how long a pod that gave an address up is still its owner's name
MAX_PAST = 4096  # given-up addresses kept before the expired are forgotten


class ApiUnavailable(Exception):
    """No configuration, or the API server did not answer: node-local facts are used."""


def _ips(values: Iterable[str | None]) -> tuple[IPAddress, ...]:
    out = []
    for v in values:
        if not v or v == "None":
            continue
        try:
            out.append(ip_address(v))
        except ValueError:
            continue
    return tuple(dict.fromkeys(out))


def _pod(obj: Any) -> Pod | None:
    meta, spec, status = obj.metadata, obj.spec, obj.status
    if meta is None or not meta.name or not meta.namespace:
        return None
    ips: tuple[IPAddress, ...] = ()
    hostnet = bool(spec and spec.hostNetwork)
    if status is not None and not hostnet and status.phase not in _FINISHED:
        ips = _ips([status.podIP, *[p.ip for p in (status.podIPs or [])]])
    return Pod(meta.namespace, meta.name, meta.uid or "", ips)


def _service(obj: Any) -> Service | None:
    meta, spec = obj.metadata, obj.spec
    if meta is None or spec is None or not meta.name or not meta.namespace:
        return None
    ips = _ips([spec.clusterIP, *(spec.clusterIPs or []), *(spec.externalIPs or [])])
    lbs = obj.status.loadBalancer.ingress if obj.status and obj.status.loadBalancer else None
    ips += _ips(i.ip for i in (lbs or []))
    return Service(meta.namespace, meta.name, ips)


def api_client() -> tuple[Any, str]:
    """A lightkube Client configured as everywhere in droptrace ($KUBECONFIG, else
    ~/.kube/config, else the in-cluster service account), and the server it talks to.
    Nothing is asked yet; ApiUnavailable when there is no usable configuration."""
    if not configured():
        raise ApiUnavailable(
            "no kubeconfig or service account ($KUBECONFIG, ~/.kube/config and the"
            " in-cluster token are all missing)"
        )
    # Imported here: droptrace without lightkube still names pods from the node, and a
    # host without any configuration does not pay a tenth of a second for the import.
    from lightkube import Client, KubeConfig
    from lightkube.core.exceptions import ConfigError

    try:
        config = KubeConfig.from_env()
    except ConfigError as err:
        raise ApiUnavailable(f"no kubeconfig or service account ({err})") from None
    except Exception as err:  # a kubeconfig that does not parse must not stop droptrace
        raise ApiUnavailable(f"unreadable kubeconfig ({type(err).__name__}: {err})") from None
    import httpx2

    current = config.get()
    server = str(current.cluster.server) if current else "the API server"
    # trust_env=False: the API server is reached directly, as the kubeconfig names it,
    # not through whatever proxy a root shell's http(s)_proxy happens to name.
    client = Client(config, timeout=httpx2.Timeout(_CONNECT_TIMEOUT_S), trust_env=False)
    return client, server


class ApiPods:
    """A connected client with its caches; the watches run in daemon threads."""

    def __init__(self) -> None:
        self._client, self.server = api_client()  # first: no configuration, no import
        from lightkube import ALL_NS
        from lightkube.resources.core_v1 import Pod as PodRes
        from lightkube.resources.core_v1 import Service as SvcRes

        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}  # uid -> pod
        self._pod_ips: dict[IPAddress, str] = {}  # ip -> uid
        # ip -> (until, pod): recent owners that gave the address up (CLOCK_MONOTONIC ns, the
        # drops' clock), so a drop explained after its pod went is still named after it.
        self._past: dict[IPAddress, list[tuple[int, Pod]]] = {}
        self._svcs: dict[str, Service] = {}  # namespace/name -> service
        self._svc_ips: dict[IPAddress, str] = {}
        try:
            pods = self._client.list(PodRes, namespace=ALL_NS)
            for obj in pods:
                self._pod_event("ADDED", obj)
            pods_rv = _version(pods)
            svcs = self._client.list(SvcRes, namespace=ALL_NS)
            for svc in svcs:
                self._svc_event("ADDED", svc)
            svcs_rv = _version(svcs)
        except Exception as err:  # httpx2 and lightkube errors alike: the API is optional
            self._client.close()
            why = f"{self.server} did not answer ({type(err).__name__}: {err})"
            raise ApiUnavailable(why) from None
        watches = ((PodRes, pods_rv, self._pod_event), (SvcRes, svcs_rv, self._svc_event))
        for res, rv, handler in watches:
            threading.Thread(
                target=self._watch, args=(res, rv, handler), name="k8s-watch", daemon=True
            ).start()

    def _watch(self, res: Any, rv: str | None, handler: Any) -> None:
        from lightkube import ALL_NS
        from lightkube.types import OnErrorAction, OnErrorResult

        def retry(_err: Exception, count: int) -> OnErrorResult:
            return OnErrorResult(OnErrorAction.RETRY, sleep=min(count, 10))

        while True:  # lightkube resumes from the last version; this covers anything else
            try:
                for kind, obj in self._client.watch(
                    res, namespace=ALL_NS, resource_version=rv, on_error=retry
                ):
                    handler(kind, obj)
            except Exception:
                time.sleep(1)
                rv = None

    def _pod_event(self, kind: str, obj: Any) -> None:
        pod = _pod(obj)
        if pod is None:
            return
        now = time.monotonic_ns()
        with self._lock:
            old = self._pods.pop(pod.uid, None)
            kept = set(pod.ips) if kind != "DELETED" else set()
            for ip in old.ips if old is not None else ():
                if self._pod_ips.get(ip) == pod.uid:
                    del self._pod_ips[ip]
                    if ip not in kept and old is not None:
                        self._gave_up(ip, old, now)
            if kind == "DELETED":
                return
            self._pods[pod.uid] = pod
            for ip in pod.ips:
                previous = self._pods.get(self._pod_ips.get(ip, ""))
                if previous is not None and previous.uid != pod.uid:
                    self._gave_up(ip, previous, now)
                self._pod_ips[ip] = pod.uid  # the newest owner of an address wins

    def _gave_up(self, ip: IPAddress, pod: Pod, now: int) -> None:
        """Remember who had `ip` until now (for _PAST_NS; called with the lock held)."""
        past = [(u, p) for u, p in self._past.get(ip, []) if now - u < _PAST_NS]
        self._past[ip] = [*past, (now, pod)]
        if len(self._past) > MAX_PAST:  # addresses not taken again: forget the expired
            self._past = {a: held for a, held in self._past.items() if now - held[-1][0] < _PAST_NS}

    def _svc_event(self, kind: str, obj: Any) -> None:
        svc = _service(obj)
        if svc is None:
            return
        with self._lock:
            old = self._svcs.pop(svc.ref, None)
            for ip in old.cluster_ips if old else ():
                if self._svc_ips.get(ip) == svc.ref:
                    del self._svc_ips[ip]
            if kind == "DELETED":
                return
            self._svcs[svc.ref] = svc
            for ip in svc.cluster_ips:
                self._svc_ips[ip] = svc.ref

    def by_ip(self, ip: IPAddress, at_ns: int | None = None) -> Pod | None:
        """The pod with this address, at `at_ns` (CLOCK_MONOTONIC) if given, else now."""
        with self._lock:
            if at_ns is not None:
                held = [(u, p) for u, p in self._past.get(ip, []) if u > at_ns]
                if held:
                    return min(held, key=lambda up: up[0])[1]  # the first to give it up since
            uid = self._pod_ips.get(ip)
            return self._pods.get(uid) if uid else None

    def any_service(self) -> bool:
        with self._lock:
            return bool(self._svc_ips)

    def service(self, ip: IPAddress) -> Service | None:
        with self._lock:
            ref = self._svc_ips.get(ip)
            return self._svcs.get(ref) if ref else None

    def all(self) -> list[Pod]:
        with self._lock:
            return list(self._pods.values())


def _version(listed: Any) -> str | None:
    try:
        return str(listed.resourceVersion)
    except Exception:
        return None
