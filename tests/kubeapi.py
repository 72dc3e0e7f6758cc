"""A Kubernetes API server of the documented shape, on 127.0.0.1, for the API path's tests.

It serves GET /api/v1/pods and /api/v1/services as PodList/ServiceList (with a list
resourceVersion) and, with ?watch=true, a stream of watch events (one JSON object per
line: {"type": ADDED|MODIFIED|DELETED, "object": ...}) after the requested
resourceVersion, as the API server does. Only the test's own objects: no kubelet, no etcd.
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

_KINDS = {"pods": "Pod", "services": "Service"}


def pod(namespace: str, name: str, ip: str, uid: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
        "spec": {"containers": [{"name": "app", "image": "app:1"}], "nodeName": "lab"},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


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
        self._objects: dict[str, dict[str, dict[str, Any]]] = {"pods": {}, "services": {}}
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

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this server (JSON is YAML)."""
        return write_kubeconfig(path, self.url)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                resource = url.path.rsplit("/", 1)[-1]
                if url.path not in ("/api/v1/pods", "/api/v1/services"):
                    self.send_error(404)
                    return
                query = parse_qs(url.query)
                if query.get("watch") == ["true"]:
                    since = int((query.get("resourceVersion") or ["0"])[0] or 0)
                    self._watch(resource, since)
                else:
                    self._list(resource)

            def _list(self, resource: str) -> None:
                with api._lock:
                    body = {
                        "apiVersion": "v1",
                        "kind": _KINDS[resource] + "List",
                        "metadata": {"resourceVersion": str(api._rv)},
                        "items": list(api._objects[resource].values()),
                    }
                data = json.dumps(body).encode()
                self.send_response(200)
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


def write_kubeconfig(path: Path, server: str) -> Path:
    conf = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": server}}],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
        "current-context": "lab",
    }
    path.write_text(json.dumps(conf))
    return path
