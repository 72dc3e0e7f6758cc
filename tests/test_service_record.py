"""Whose packet, further: the service of a packet the node DNAT'd and then dropped on its
way to the backend, and a flight recorder scoped to one pod."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import (
    Droptrace,
    LabUp,
    MakeNetns,
    k8s_ns,
    loaded_droptrace_programs,
    routed_udp_topology,
    run_cli,
    send_udp,
    sh,
)
from tracer.recorder import PIN_DIR

pytestmark = pytest.mark.root

NO_API = {"KUBECONFIG": "/nonexistent/kubeconfig"}


def send_from_port(ns: str, n: int) -> None:
    """n datagrams to the ClusterIP from one source port: one flow, one conntrack entry."""
    code = (
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
        "s.bind(('0.0.0.0', 40053));"
        f"[s.sendto(b'query', ('198.19.0.10', 53)) for _ in range({n})]"
    )
    sh(sys.executable, "-c", code, ns=ns)


def test_a_forwarded_drop_after_dnat_names_the_service_it_was_sent_to(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    # kube-proxy's shape: the ClusterIP's rule carries the service's name in its comment.
    sh("iptables", "-t", "nat", "-A", "PREROUTING", "-d", "198.19.0.10/32", "-p", "udp",
       "--dport", "53", "-m", "comment", "--comment", "shop/dns:dns cluster IP",
       "-j", "DNAT", "--to-destination", "198.51.100.2:5353", ns=router)  # fmt: skip
    # The flow passes once (conntrack keeps it, DNAT'd), then a policy on the backend drops
    # it after the DNAT, in FORWARD: the packet now says 198.51.100.2, conntrack says which
    # service it was sent to.
    send_from_port(client, 1)
    sh("iptables", "-A", "FORWARD", "-d", "198.51.100.2", "-p", "udp", "--dport", "5353",
       "-j", "DROP", ns=router)  # fmt: skip
    with Droptrace("--json", "--netns", router, "--duration", "4", env=NO_API) as dt:
        send_from_port(client, 2)
        res = dt.wait()
    drops = [e for e in res.events if e["dport"] == 5353]
    assert drops, res.events
    ev = drops[0]
    assert (ev["category"], ev["dst"], ev["svc"]) == ("netfilter", "198.51.100.2", "shop/dns"), ev


def test_a_first_packet_dropped_after_dnat_names_the_service_from_its_own_entry(
    netns: MakeNetns,
) -> None:
    """No flow passed before: each datagram's conntrack entry is new, never confirmed, and
    freed with it, so only the entry the dropped skb still carries knows the service. A
    datagram sent to the backend itself names no service."""
    client, router, _ = routed_udp_topology(netns)
    sh("iptables", "-t", "nat", "-A", "PREROUTING", "-d", "198.19.0.10/32", "-p", "udp",
       "--dport", "53", "-m", "comment", "--comment", "shop/dns:dns cluster IP",
       "-j", "DNAT", "--to-destination", "198.51.100.2:5353", ns=router)  # fmt: skip
    sh("iptables", "-A", "FORWARD", "-d", "198.51.100.2", "-p", "udp", "--dport", "5353",
       "-j", "DROP", ns=router)  # fmt: skip
    with Droptrace("--json", "--netns", router, "--duration", "4", env=NO_API) as dt:
        send_from_port(client, 2)
        send_udp(client, "198.51.100.2", 5353, n=1)  # straight to the backend: no DNAT
        res = dt.wait()
    drops = [e for e in res.events if e["dport"] == 5353]
    via_service = [e for e in drops if e["sport"] == 40053]
    direct = [e for e in drops if e["sport"] != 40053]
    assert len(via_service) == 2 and len(direct) == 1, drops
    for ev in via_service:
        assert (ev["category"], ev["dst"], ev["svc"]) == ("netfilter", "198.51.100.2", "shop/dns")
        assert ev["evidence"]["dnat_from"] == "198.19.0.10:53", ev
        assert ev["explanation"].endswith(
            "; sent to 198.19.0.10:53 (service shop/dns), DNAT'd to 198.51.100.2:5353"
        ), ev["explanation"]
    assert direct[0]["svc"] is None and "dnat_from" not in direct[0]["evidence"], direct


@pytest.fixture
def stopped_after() -> Iterator[None]:
    yield
    run_cli("stop")
    assert not PIN_DIR.exists()
    assert loaded_droptrace_programs() == []


def test_record_pod_keeps_only_that_pods_drops(lab_up: LabUp, stopped_after: None) -> None:
    prefix = lab_up("no-route")
    res = run_cli("record", "--pod", "pod-a", "-n", k8s_ns(prefix), env=NO_API)
    assert res.rc == 0, res.stderr
    assert f"pod {k8s_ns(prefix)}/pod-a (198.18.1.2" in res.stderr
    send_udp(prefix + "pod-a", "198.18.1.1", 9, n=3)  # NO_SOCKET on node1: pod-a's
    send_udp(prefix + "pod-b", "198.18.2.1", 9, n=4)  # NO_SOCKET on node2: pod-b's
    doc = json.loads(run_cli("dump", "--json", env=NO_API).stdout)
    drops = doc["drops"]
    assert len(drops) == 3, drops
    assert {d["src_pod"] for d in drops} == {f"{k8s_ns(prefix)}/pod-a"}
    assert doc["totals"]["per_reason"] == {"NO_SOCKET": 3}
