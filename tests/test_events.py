"""`droptrace serve --events`: Kubernetes Events on the pods whose packets the node drops.

The root tests run the real agent on a lab pod's real drops, against the local API server of
tests/kubeapi.py serving that pod; the others check the aggregation and its rate limits with
a clock and a fake API, and that posting never holds up the stream."""

from __future__ import annotations

import ast
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Droptrace, LabUp, lab_pod_uid, run_cli, send_udp
from tests.kubeapi import KubeApi, pod, write_kubeconfig
from tracer.model import AttributedDrop, Category, Diagnosis, Drop, Facts
from tracer.serve import events as ev

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(check: Callable[[], bool], timeout: float, what: str, seen: Callable[[], Any]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}; seen: {seen()}")
        time.sleep(0.2)


def _requests(api: KubeApi, method: str) -> list[str]:
    return [path for m, path in api.requests if m == method and "/events" in path]


@pytest.mark.root
def test_a_lab_pods_drops_become_one_event_whose_count_a_second_burst_patches(
    lab_up: LabUp, tmp_path: Path
) -> None:
    prefix = lab_up("no-route")
    uid = lab_pod_uid(prefix, "pod-a")
    api = KubeApi([pod("shop", "web", "198.18.1.2", uid=uid)], [])
    try:
        env = {"KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig"))}
        port = _free_port()
        args = ("serve", "--events", "--listen", f"127.0.0.1:{port}", "--node", "lab-node")
        # This lab's node1 only: other labs running meanwhile use the same addresses.
        with Droptrace(*args, "--netns", prefix + "node1", env=env) as dt:
            send_udp(prefix + "pod-a", "198.18.1.1", 9, n=3)  # NO_SOCKET on node1, from pod-a

            def count_is(n: int) -> Callable[[], bool]:
                return lambda: [e.get("count") for e in api.objects("events")] == [n]

            def seen() -> tuple[Any, ...]:
                return api.objects("events"), api.requests, "".join(dt._err)

            _until(count_is(3), 30, "one Event with count 3", seen)
            (first,) = api.objects("events")
            send_udp(prefix + "pod-a", "198.18.1.1", 9, n=2)
            _until(count_is(5), 30, "that Event's count patched to 5", seen)
            dt.proc.send_signal(signal.SIGTERM)
            res = dt.wait()
    finally:
        api.close()
    assert res.rc == 0, res.stderr
    assert f"posting Kubernetes Events to {api.url}" in res.stderr
    assert "not posted" not in res.stderr
    (event,) = api.objects("events")
    assert event["metadata"]["name"] == first["metadata"]["name"]
    assert event["metadata"]["namespace"] == "shop"
    assert event["involvedObject"] == {
        "apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web", "uid": uid,
    }  # fmt: skip
    assert (event["reason"], event["type"]) == ("PacketsDropped", "Warning")
    assert event["source"] == {"component": "droptrace", "host": "lab-node"}
    message = event["message"]
    assert message.startswith("no_socket on node lab-node (198.18.1.2:"), message
    assert "-> 198.18.1.1:9 udp): no socket listens" in message and "; fix: " in message
    assert event["firstTimestamp"] <= event["lastTimestamp"]
    # The second burst was a patch of the same Event, not a new one.
    assert len(_requests(api, "POST")) == 1, api.requests
    assert _requests(api, "PATCH"), api.requests


@pytest.mark.root
def test_an_unreachable_api_server_is_one_line_and_the_stream_goes_on(
    lab_up: LabUp, tmp_path: Path
) -> None:
    prefix = lab_up("no-route")
    # A port nothing listens on: the API server is down.
    env = {"KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9"))}
    port = _free_port()
    args = ("serve", "--events", "--listen", f"127.0.0.1:{port}", "--netns", prefix + "node1")
    with Droptrace(*args, env=env) as dt:
        send_udp(prefix + "pod-a", "198.18.1.1", 9, n=2)
        dt.wait_for("Kubernetes Event not posted", timeout=15)
        send_udp(prefix + "pod-a", "198.18.1.1", 10, n=2)
        time.sleep(1)  # SIGTERM then explains what was read, and writes it
        dt.proc.send_signal(signal.SIGTERM)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    assert [e["dport"] for e in res.events] == [9, 9, 10, 10]
    notes = [line for line in res.stderr.splitlines() if "not posted" in line]
    assert len(notes) == 1 and "did not answer" in notes[0], res.stderr


def test_events_without_any_api_configuration_is_one_line_before_anything_loads() -> None:
    env = {"KUBECONFIG": "/nonexistent/kubeconfig", "HOME": "/nonexistent"}
    res = run_cli("serve", "--events", "--listen", f"127.0.0.1:{_free_port()}", env=env)
    assert res.rc == 69, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("droptrace: --events needs the Kubernetes API: no kubeconfig"), line


# -- the aggregation, with a clock and a fake API ------------------------------------------


class FakeApi:
    def __init__(self, pods: set[tuple[str, str]]) -> None:
        self.pods = pods
        self.calls: list[tuple[Any, ...]] = []
        self.gone = False
        self.failing: str | None = None
        self.release = threading.Event()
        self.release.set()

    def pod_uid(self, namespace: str, name: str) -> str | None:
        self.release.wait()
        if self.failing:
            raise ev.PostFailed(self.failing)
        return f"uid-{name}" if (namespace, name) in self.pods else None

    def create(self, key: ev.PairKey, tally: ev.Tally, count: int) -> str:
        self.calls.append(("create", key.pod, key.cause, count, tally.uid))
        return f"{key.pod}.{len(self.calls)}"

    def patch(self, key: ev.PairKey, name: str, tally: ev.Tally, count: int) -> None:
        self.calls.append(("patch", name, count))
        if self.gone:
            raise ev.EventGone(name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sighting(n: int = 1, cause: str = "rp_filter", name: str = "web") -> ev.Sighting:
    return ev.Sighting(ev.PairKey("shop", name, cause), n, datetime.now(UTC), "msg")


def test_one_new_event_a_minute_per_pod_and_cause_and_patches_in_between() -> None:
    api, clock, notes = FakeApi({("shop", "web")}), Clock(), []
    tallies = ev.Tallies(api, notes.append, clock)
    tallies.add(sighting(3))
    tallies.add(sighting(1, cause="netfilter"))  # another cause: its own Event
    tallies.flush()
    assert api.calls == [
        ("create", "web", "rp_filter", 3, "uid-web"),
        ("create", "web", "netfilter", 1, "uid-web"),
    ]
    api.calls.clear()
    tallies.add(sighting(2))
    clock.now += ev.PATCH_EVERY_S / 2
    tallies.flush()
    assert api.calls == []  # not due yet: counted, not posted
    clock.now += ev.PATCH_EVERY_S / 2
    tallies.flush()
    assert api.calls == [("patch", "web.1", 5)]
    # The Event expired: a new one, but not before a minute since the last was created.
    api.calls.clear()
    api.gone = True
    tallies.add(sighting(1))
    clock.now += ev.PATCH_EVERY_S
    tallies.flush()
    assert api.calls == [("patch", "web.1", 6)]
    api.gone = False
    tallies.add(sighting(1))
    clock.now = 1000.0 + ev.NEW_EVENT_EVERY_S
    tallies.flush()
    assert api.calls[1:] == [("create", "web", "rp_filter", 2, "uid-web")]
    assert notes == []


def test_a_failure_is_said_once_until_posting_works_again() -> None:
    api, clock, notes = FakeApi({("shop", "web")}), Clock(), []
    tallies = ev.Tallies(api, notes.append, clock)
    api.failing = "create Event: the API server answered 403 (forbidden)"
    for _ in range(3):
        tallies.add(sighting())
        tallies.flush()
        clock.now += ev.NEW_EVENT_EVERY_S
    assert len(notes) == 1 and "403 (forbidden)" in notes[0] and "not posted" in notes[0]
    api.failing = None
    tallies.flush()
    assert api.calls == [("create", "web", "rp_filter", 3, "uid-web")]  # none was lost
    assert notes[1:] == ["Kubernetes Events posted again"]


def test_a_pod_the_api_does_not_know_gets_no_event_and_one_note() -> None:
    api, clock, notes = FakeApi(set()), Clock(), []
    tallies = ev.Tallies(api, notes.append, clock)
    for _ in range(3):
        tallies.add(sighting())
        tallies.flush()
        clock.now += ev.NEW_EVENT_EVERY_S
    assert api.calls == []
    assert notes == ["no Events for pod shop/web: the API has no such pod"]


def _drop(
    category: Category = Category.RP_FILTER,
    src_pod: str | None = "shop/web",
    dst_pod: str | None = "shop/db",
    benign: bool = False,
) -> AttributedDrop:
    drop = Drop(
        ts_ns=1, location=0, reason=0, netns=1, ifindex=2, length=60, mark=0, l3proto=0x800,
        l4proto=6, src=ip_address("198.18.1.2"), dst=ip_address("198.18.2.2"), sport=40000,
        dport=5432, icmp_type=None, icmp_code=None, hook=0, suppressed=4,
    )  # fmt: skip
    facts = Facts(
        datetime.now(UTC), "IP_RPFILTER", "ip_rcv_finish", "eth0", "node1",
        src_pod=src_pod, dst_pod=dst_pod,
    )  # fmt: skip
    return AttributedDrop(
        drop, facts, Diagnosis(category, "strict rp_filter", "set it to 2", benign)
    )


def test_a_drop_is_one_sighting_per_pod_at_its_ends_with_its_held_back_twins() -> None:
    seen = ev.sightings(_drop(), "node1")
    assert [(s.key.namespace, s.key.pod, s.key.cause, s.count) for s in seen] == [
        ("shop", "web", "rp_filter", 5),
        ("shop", "db", "rp_filter", 5),
    ]
    assert seen[0].message == (
        "rp_filter on node node1 (198.18.1.2:40000 -> 198.18.2.2:5432 tcp): "
        "strict rp_filter; fix: set it to 2"
    )
    assert ev.sightings(_drop(benign=True), "n") == []
    assert ev.sightings(_drop(Category.OTHER), "n") == []  # no cause to tell
    assert ev.sightings(_drop(src_pod=None, dst_pod=None), "n") == []
    assert len(ev.sightings(_drop(dst_pod="shop/web"), "n")) == 1  # a hairpin: one pod


def test_offering_drops_never_waits_for_a_slow_api_server() -> None:
    api = FakeApi({("shop", "web")})
    api.release.clear()  # every request hangs until released
    poster = ev.EventPoster(api, "node1", lambda _line: None)
    poster.start()
    try:
        poster.offer(_drop())
        time.sleep(ev.FLUSH_EVERY_S + 0.5)  # the thread is now stuck in a request
        start = time.monotonic()
        for _ in range(ev.QUEUE_SIZE * 3):
            poster.offer(_drop())
        assert time.monotonic() - start < 0.5
        assert poster.overflow > 0  # counted out of the Events, never waited for
        start = time.monotonic()
        poster.close()  # gives up on the stuck request in bounded time
        assert time.monotonic() - start < ev.CLOSE_DEADLINE_S + ev.FLUSH_EVERY_S + 0.5
    finally:
        api.release.set()


def test_sinks_only_render() -> None:
    """Sinks never import enrichment, the loader or the session; Events post from serve/."""
    forbidden = ("tracer.enrich", "tracer.hooks", "tracer.session")
    for path in sorted((REPO / "tracer/sinks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"
