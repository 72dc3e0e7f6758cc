"""The API server side of `serve --events` (tracer.serve.events.EventApi over lightkube), with
droptrace's one way of configuring a client (tracer.enrich.pods_api.api_client).

Core v1 Events, written as client-go's event recorder writes them, so `kubectl describe pod`
lists them: involvedObject with the pod's UID (kubectl selects on it), count,
first/lastTimestamp, source component and host, and no eventTime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from tracer.errors import ApiUnreachable
from tracer.serve.events import REASON, EventGone, PairKey, PostFailed, Tally

COMPONENT = "droptrace"
_NAME_MAX = 253  # an Event's name is a DNS subdomain
_INSTANCE_MAX = 128  # reportingInstance
T = TypeVar("T")


class NotFound(Exception):
    """The API server answered 404."""


def _time(at: datetime) -> str:
    """metav1.Time: RFC 3339 in UTC, whole seconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeEvents:
    def __init__(self, client: Any, server: str, node: str) -> None:
        self._client = client
        self.server = server
        self._node = node

    @classmethod
    def connect(cls, node: str) -> KubeEvents:
        """A client for the configured API server (nothing asked yet); one line when there is
        no configuration at all."""
        from tracer.enrich.pods_api import ApiUnavailable, api_client

        try:
            client, server = api_client()
        except ApiUnavailable as err:
            raise ApiUnreachable(f"--events needs the Kubernetes API: {err}") from None
        return cls(client, server, node)

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """The request; NotFound for a 404, PostFailed for any other failure."""
        from lightkube import ApiError

        try:
            return request()
        except ApiError as err:
            code = err.status.code if err.status is not None else None
            if code == 404:
                raise NotFound(what) from None
            why = err.status.message if err.status is not None else str(err)
            raise PostFailed(f"{what}: {self.server} answered {code} ({why})") from None
        except Exception as err:  # httpx2 transport errors and timeouts alike
            raise PostFailed(
                f"{what}: {self.server} did not answer ({type(err).__name__})"
            ) from None

    def pod_uid(self, namespace: str, name: str) -> str | None:
        from lightkube.resources.core_v1 import Pod

        what = f"get pod {namespace}/{name}"
        try:
            pod = self._call(what, lambda: self._client.get(Pod, name, namespace=namespace))
        except NotFound:
            return None
        return str(pod.metadata.uid) if pod.metadata and pod.metadata.uid else None

    def create(self, key: PairKey, tally: Tally, count: int) -> str:
        from lightkube.resources.core_v1 import Event

        suffix = f".{time.time_ns():x}"  # as client-go names them: <object>.<hex time>
        event = Event.from_dict(
            {
                "metadata": {
                    "name": key.pod[: _NAME_MAX - len(suffix)] + suffix,
                    "namespace": key.namespace,
                },
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "namespace": key.namespace,
                    "name": key.pod,
                    "uid": tally.uid,
                },
                "reason": REASON,
                "type": "Warning",
                "message": tally.message,
                "count": count,
                "firstTimestamp": _time(tally.first),
                "lastTimestamp": _time(tally.last),
                "source": {"component": COMPONENT, "host": self._node},
                "reportingComponent": COMPONENT,
                "reportingInstance": self._node[:_INSTANCE_MAX],
            }
        )
        what = f"create Event for pod {key.namespace}/{key.pod}"
        try:
            created = self._call(what, lambda: self._client.create(event))
        except NotFound:  # its namespace is gone
            raise PostFailed(f"{what}: {self.server} answered 404") from None
        return str(created.metadata.name)

    def patch(self, key: PairKey, name: str, tally: Tally, count: int) -> None:
        from lightkube.resources.core_v1 import Event
        from lightkube.types import PatchType

        change = {"count": count, "lastTimestamp": _time(tally.last), "message": tally.message}
        try:
            self._call(
                f"patch Event {key.namespace}/{name}",
                lambda: self._client.patch(
                    Event, name, change, namespace=key.namespace, patch_type=PatchType.MERGE
                ),
            )
        except NotFound:
            raise EventGone(name) from None
