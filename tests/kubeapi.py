"""A Kubernetes API server of the documented shape, on 127.0.0.1, for the API path's tests.

It serves GET /api/v1/pods and /api/v1/services as PodList/ServiceList (with a list
resourceVersion) and, with ?watch=true, a stream of watch events (one JSON object per
line: {"type": ADDED|MODIFIED|DELETED, "object": ...}) after the requested
resourceVersion, as the API server does; lists of one namespace
(/api/v1/namespaces/NS/pods) with equality label and field selectors; and one object by
name (/api/v1/namespaces/NS/pods/NAME), a Status with code 404 when there is none. Events
are created (POST /api/v1/namespaces/NS/events) and merge-patched (PATCH .../events/NAME),
and every request is logged in `requests`. Only the test's own objects: no kubelet, no etcd.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

_KINDS = {"pods": "Pod", "services": "Service", "events": "Event"}


def pod(
    namespace: str, name: str, ip: str, uid: str | None = None, node: str = "lab"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
        "spec": {"containers": [{"name": "app", "image": "app:1"}], "nodeName": node},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def agent(name: str, node: str, ip: str, phase: str = "Running") -> dict[str, Any]:
    """A droptrace agent pod as deploy/'s DaemonSet makes them: host network, one a node."""
    obj = pod("droptrace", name, ip, node=node)
    obj["metadata"]["labels"] = {"app.kubernetes.io/name": "droptrace"}
    obj["spec"]["containers"] = [{"name": "droptrace", "image": "droptrace:dev"}]
    obj["spec"]["hostNetwork"] = True
    obj["status"]["phase"] = phase
    return obj


def service(namespace: str, name: str, cluster_ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": [{"port": 80, "protocol": "TCP"}],
        },
    }


class KubeApi:
    def __init__(self, pods: list[dict[str, Any]], services: list[dict[str, Any]]) -> None:
        self._lock = threading.Lock()
        self._rv = 0
        self._objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in _KINDS}
        self.requests: list[tuple[str, str]] = []  # (method, path), in the order they came
        self._log: list[tuple[int, str, str]] = []  # (resourceVersion, resource, event line)
        for obj in pods:
            self.event("pods", "ADDED", obj)
        for obj in services:
            self.event("services", "ADDED", obj)
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def event(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        """Change the cluster: the next list shows it, open watches receive it."""
        with self._lock:
            self._rv += 1
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = str(self._rv)
            key = obj["metadata"]["uid"]
            if kind == "DELETED":
                self._objects[resource].pop(key, None)
            else:
                self._objects[resource][key] = obj
            self._log.append((self._rv, resource, json.dumps({"type": kind, "object": obj})))

    def objects(self, resource: str) -> list[dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(list(self._objects[resource].values())))  # type: ignore[no-any-return]

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, path: Path, namespace: str | None = None) -> Path:
        """A kubeconfig pointing at this server (JSON is YAML), its context in `namespace`."""
        return write_kubeconfig(path, self.url, namespace)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                api.requests.append(("POST", urlparse(self.path).path))
                match urlparse(self.path).path.strip("/").split("/"):
                    case ["api", "v1", "namespaces", ns, "events"]:
                        obj = self._body()
                        meta = obj.setdefault("metadata", {})
                        if meta.get("namespace", ns) != ns or not meta.get("name"):
                            self._status(400, "BadRequest", "namespace or name wrong")
                            return
                        if any(
                            o["metadata"]["name"] == meta["name"]
                            for o in api.objects("events")
                            if o["metadata"]["namespace"] == ns
                        ):
                            self._status(409, "AlreadyExists", f'events "{meta["name"]}" exists')
                            return
                        meta |= {"namespace": ns, "uid": str(uuid.uuid4())}
                        api.event("events", "ADDED", obj)
                        self._send(201, self._stored("events", meta["uid"]))
                    case _:
                        self.send_error(404)

            def do_PATCH(self) -> None:
                api.requests.append(("PATCH", urlparse(self.path).path))
                match urlparse(self.path).path.strip("/").split("/"):
                    case ["api", "v1", "namespaces", ns, "events", name]:
                        if self.headers.get("Content-Type") != "application/merge-patch+json":
                            self._status(415, "UnsupportedMediaType", "merge patches only")
                            return
                        change = self._body()
                        hits = [
                            o
                            for o in api.objects("events")
                            if o["metadata"]["namespace"] == ns and o["metadata"]["name"] == name
                        ]
                        if not hits:
                            self._status(404, "NotFound", f'events "{name}" not found')
                            return
                        obj = _merge(hits[0], change)
                        api.event("events", "MODIFIED", obj)
                        self._send(200, self._stored("events", obj["metadata"]["uid"]))
                    case _:
                        self.send_error(404)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")  # type: ignore[no-any-return]

            def _stored(self, resource: str, uid: str) -> dict[str, Any]:
                with api._lock:
                    return api._objects[resource][uid]

            def _status(self, code: int, reason: str, message: str) -> None:
                body = {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "status": "Failure",
                    "message": message,
                    "reason": reason,
                    "code": code,
                }
                self._send(code, body)

            def do_GET(self) -> None:
                api.requests.append(("GET", urlparse(self.path).path))
                url = urlparse(self.path)
                query = parse_qs(url.query)
                parts = url.path.strip("/").split("/")
                match parts:
                    case ["api", "v1", resource] if resource in _KINDS:
                        if query.get("watch") == ["true"]:
                            since = int((query.get("resourceVersion") or ["0"])[0] or 0)
                            self._watch(resource, since)
                        else:
                            self._list(resource, None, query)
                    case ["api", "v1", "namespaces", ns, resource] if resource in _KINDS:
                        self._list(resource, ns, query)
                    case ["api", "v1", "namespaces", ns, resource, name] if resource in _KINDS:
                        self._get(resource, ns, name)
                    case _:
                        self.send_error(404)

            def _list(self, resource: str, ns: str | None, query: dict[str, list[str]]) -> None:
                labels = _selector(query.get("labelSelector"))
                fields = _selector(query.get("fieldSelector"))
                with api._lock:
                    objs = api._objects[resource].values()
                    items = [o for o in objs if _matches(o, ns, labels, fields)]
                    body = {
                        "apiVersion": "v1",
                        "kind": _KINDS[resource] + "List",
                        "metadata": {"resourceVersion": str(api._rv)},
                        "items": items,
                    }
                self._send(200, body)

            def _get(self, resource: str, ns: str, name: str) -> None:
                with api._lock:
                    hits = [
                        o
                        for o in api._objects[resource].values()
                        if o["metadata"]["namespace"] == ns and o["metadata"]["name"] == name
                    ]
                if hits:
                    self._send(200, hits[0])
                    return
                self._status(404, "NotFound", f'{resource} "{name}" not found')

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _watch(self, resource: str, since: int) -> None:
                # HTTP/1.0 without a length: the body is the stream, until we close it.
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                while not api._stopping.is_set():
                    with api._lock:
                        new = [(rv, line) for rv, r, line in api._log if r == resource]
                    for rv, line in new:
                        if rv > since:
                            self.wfile.write(line.encode() + b"\n")
                            self.wfile.flush()
                            since = rv
                    time.sleep(0.05)

        return Handler


def _merge(obj: Any, change: Any) -> Any:
    """A JSON merge patch (RFC 7386): objects merge, null removes, anything else replaces."""
    if not isinstance(change, dict):
        return change
    out = dict(obj) if isinstance(obj, dict) else {}
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _selector(values: list[str] | None) -> dict[str, str]:
    """`a=b,c==d` (equality only: what the tests' clients send)."""
    out = {}
    for term in ",".join(values or []).split(","):
        if term:
            key, _, value = term.partition("=")
            out[key] = value.removeprefix("=")
    return out


def _matches(
    obj: dict[str, Any], ns: str | None, labels: dict[str, str], fields: dict[str, str]
) -> bool:
    meta = obj["metadata"]
    return (
        ns in (None, meta["namespace"])
        and all(meta.get("labels", {}).get(k) == v for k, v in labels.items())
        and all(_field(obj, k) == v for k, v in fields.items())
    )


def _field(obj: dict[str, Any], path: str) -> str | None:
    """A field selector's field, e.g. spec.nodeName."""
    value: Any = obj
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return None if value is None else str(value)


def write_kubeconfig(path: Path, server: str, namespace: str | None = None) -> Path:
    context = {"cluster": "lab", "user": "lab"} | ({"namespace": namespace} if namespace else {})
    conf = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": server}}],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [{"name": "lab", "context": context}],
        "current-context": "lab",
    }
    path.write_text(json.dumps(conf))
    return path
