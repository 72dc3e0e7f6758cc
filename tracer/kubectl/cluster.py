"""Where a pod runs and which droptrace agent runs there, asked of the Kubernetes API
(lightkube, configured as everywhere in droptrace: pods_api.api_client)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tracer.enrich.pods_api import ApiUnavailable, api_client
from tracer.errors import ApiRefused, ApiUnreachable, NoAgent, PodNotScheduled, UnknownPod

# The DaemonSet's contract (deploy/): one agent pod per node, found by these.
AGENT_NAMESPACE = "droptrace"
AGENT_LABEL = ("app.kubernetes.io/name", "droptrace")
AGENT_CONTAINER = "droptrace"
INSTALL = "install the agents with `kubectl apply -k deploy/`"


@dataclass(frozen=True, slots=True)
class Agent:
    name: str  # the agent's pod, in AGENT_NAMESPACE
    node: str


@dataclass(frozen=True, slots=True)
class PodPlace:
    namespace: str
    name: str
    node: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


class Cluster:
    """One API client; every failure is a DroptraceError with one line to show."""

    def __init__(self) -> None:
        try:
            self._client, self.server = api_client()
        except ApiUnavailable as err:
            raise ApiUnreachable(f"Kubernetes API not reachable: {err}") from None

    @property
    def namespace(self) -> str:
        """The kubeconfig context's namespace (the service account's in a pod), as kubectl."""
        return str(self._client.namespace or "default")

    def pod(self, name: str, namespace: str) -> PodPlace:
        from lightkube.resources.core_v1 import Pod

        obj = self._ask(
            f"get pod {namespace}/{name}",
            lambda: self._client.get(Pod, name, namespace=namespace),
        )
        if obj is None:
            raise UnknownPod(self._unknown(name, namespace))
        node = obj.spec.nodeName if obj.spec else None
        if not node:
            phase = obj.status.phase if obj.status else None
            raise PodNotScheduled(f"pod {namespace}/{name} is on no node yet (phase {phase})")
        return PodPlace(namespace, name, node)

    def agent_on(self, node: str) -> Agent:
        found = self._agents(node)
        running = [a for a, phase in found if phase == "Running"]
        if running:
            return running[0]
        if found:
            states = ", ".join(f"{a.name} is {phase}" for a, phase in found)
            raise NoAgent(f"the droptrace agent on node {node} is not running ({states})")
        raise NoAgent(f"no droptrace agent runs on node {node}; {INSTALL}")

    def agents(self) -> tuple[list[Agent], list[str]]:
        """The running agent of every node, and a note for each node whose agent is not."""
        found = self._agents(None)
        if not found:
            raise NoAgent(f"no droptrace agent runs in this cluster; {INSTALL}")
        running: dict[str, Agent] = {}
        for a, phase in found:
            if phase == "Running":
                running.setdefault(a.node, a)
        notes = [
            f"node {a.node}: agent {a.name} is {phase}, skipped"
            for a, phase in found
            if a.node not in running
        ]
        if not running:
            raise NoAgent(f"no droptrace agent is running: {'; '.join(notes)}")
        return sorted(running.values(), key=lambda a: a.node), notes

    def _agents(self, node: str | None) -> list[tuple[Agent, str | None]]:
        """Agent pods (on `node`, else anywhere), newest first, with their phase."""
        from lightkube.resources.core_v1 import Pod

        label, value = AGENT_LABEL
        fields = {"spec.nodeName": node} if node else None

        def agent_pods() -> list[Any]:
            found = self._client.list(
                Pod, namespace=AGENT_NAMESPACE, labels={label: value}, fields=fields
            )
            return list(found)

        what = f"list the droptrace agents (namespace {AGENT_NAMESPACE}, label {label}={value})"
        objs = self._ask(what, agent_pods) or []
        out = []
        for obj in sorted(objs, key=_created, reverse=True):
            meta, spec = obj.metadata, obj.spec
            if meta is None or spec is None or not spec.nodeName or meta.deletionTimestamp:
                continue
            out.append((Agent(str(meta.name), spec.nodeName), obj.status and obj.status.phase))
        return out

    def _unknown(self, name: str, namespace: str) -> str:
        """One line for a pod that is not there, with the closest names in its namespace."""
        from lightkube.resources.core_v1 import Pod

        def names() -> list[str]:
            pods = self._client.list(Pod, namespace=namespace)
            return sorted(str(p.metadata.name) for p in pods if p.metadata)

        where = f"no pod {name!r} in namespace {namespace!r}"
        try:
            known = self._ask(f"list pods in {namespace}", names) or []
        except ApiRefused:  # may get but not list: the pod is still not there
            return where
        close = difflib.get_close_matches(name, known, n=3)
        if close:
            return f"{where}; did you mean {', '.join(close)}?"
        return f"{where}; it has no pods" if not known else f"{where} ({len(known)} pods there)"

    def _ask(self, what: str, call: Callable[[], Any]) -> Any:
        """The API's answer; None for 'not found'; any other failure as one line."""
        import httpx2

        try:
            return call()
        except httpx2.HTTPStatusError as err:
            if err.response.status_code == 404:
                return None
            status = getattr(err, "status", None)
            why = (status.message if status is not None else None) or str(err)
            raise ApiRefused(f"the API server refused to {what}: {why}") from None
        except httpx2.TransportError as err:
            raise ApiUnreachable(
                f"Kubernetes API not reachable: {self.server} did not answer "
                f"({type(err).__name__}: {err})"
            ) from None


def _created(obj: Any) -> str:
    ts = obj.metadata.creationTimestamp if obj.metadata else None
    return ts.isoformat() if ts is not None else ""
