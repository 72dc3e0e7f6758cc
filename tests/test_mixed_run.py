"""Issue 19's closing measure: every reproduction of the drops nodes hit in the wild, in one
`droptrace --json --all` session. No drop that is not benign may come out as `other`."""

from __future__ import annotations

import collections
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import test_checksum, test_conntrack, test_devices, test_ipv6, test_martian, test_tcp
from tests.helpers import (
    Droptrace,
    MakeNetns,
    background,
    link,
    routed_udp_topology,
    send_df,
    send_udp,
    sh,
)
from tests.test_service_record import send_from_port

pytestmark = pytest.mark.root

Topo = tuple[str, str, str]  # client, router, server
_LOCAL_SEND = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(2):
    try:
        s.sendto(b"x", ("198.51.100.2", 7777))
    except OSError:
        pass
"""
EXPECTED = {
    "conntrack",
    "mtu",
    "neighbour",
    "netfilter",
    "tc",
    "qdisc",
    "link_down",
    "checksum",
    "forwarding_disabled",
    "no_route",
    "martian",
}


@dataclass
class Faults:
    """One topology per fault, all built before droptrace starts (it watches them all)."""

    made: list[str] = field(default_factory=list)
    topos: dict[str, Topo] = field(default_factory=dict)


def build(netns: MakeNetns, tmp_path: Path) -> Faults:
    f = Faults()

    def ns(tag: str = "ns") -> str:
        f.made.append(netns(tag))
        return f.made[-1]

    def topo(name: str) -> Topo:
        f.topos[name] = routed_udp_topology(ns)
        return f.topos[name]

    c, r, _ = topo("conntrack")
    sh("iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
       "-j", "ACCEPT", ns=r)  # fmt: skip
    sh("ip", "link", "set", "r-srv", "mtu", "1280", ns=topo("mtu")[1])
    sh("ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.9", ns=topo("neighbour")[1])
    c, r, _ = topo("output")
    sh("iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "7777", "-j", "DROP", ns=c)
    c, r, _ = topo("tc")
    test_devices.static_neighbour(c, "192.0.2.1", "eth0", r, "r-cli")
    sh("tc", "qdisc", "add", "dev", "r-cli", "clsact", ns=r)
    sh("tc", "filter", "add", "dev", "r-cli", "ingress", "pref", "7", "bpf", "da", "obj",
       str(test_devices.shot_program(tmp_path)), "sec", "tc", ns=r)  # fmt: skip
    sh("tc", "qdisc", "add", "dev", "r-srv", "root", "handle", "8001:", "tbf", "rate", "8kbit",
       "burst", "1600", "limit", "100", ns=topo("qdisc")[1])  # fmt: skip
    _, r, s = topo("link")
    test_devices.static_neighbour(r, "198.51.100.2", "r-srv", s, "eth0")
    sh("ip", "link", "set", "eth0", "down", ns=s)
    topo("checksum")
    f.topos["ipv6"] = test_ipv6.v6_topology(ns)
    sh("ip6tables", "-A", "FORWARD", "-p", "udp", "--dport", "7777", "-j", "DROP",
       ns=f.topos["ipv6"][1])  # fmt: skip
    f.topos["ipv6-off"] = test_ipv6.v6_topology(ns)
    sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=0", ns=f.topos["ipv6-off"][1])
    topo("martian")
    tcp_client, tcp_server = ns("tcpc"), ns("tcps")
    link(tcp_client, tcp_server, "eth0", "eth0", "192.0.2.1/24", "192.0.2.2/24")
    f.topos["tcp"] = (tcp_client, tcp_server, tcp_server)
    _, r, _ = topo("svc")
    sh("iptables", "-t", "nat", "-A", "PREROUTING", "-d", "198.19.0.10/32", "-p", "udp",
       "--dport", "53", "-j", "DNAT", "--to-destination", "198.51.100.2:5353", ns=r)  # fmt: skip
    return f


def send_all(t: dict[str, Topo], dt: Droptrace) -> None:
    """Every fault's traffic; conntrack's first, while the global maximum is lowered."""
    ct = t["conntrack"]
    with test_conntrack.conntrack_max(test_conntrack.count_in(ct[1])):
        send_udp(ct[0], "198.51.100.2", 7777, n=3)
        assert dt.wait_for_event(lambda e: e["netns"] == ct[1] and e["dport"] == 7777, 20)
    send_df(t["mtu"][0], "198.51.100.2", 7777, 1400)
    send_udp(t["neighbour"][0], "203.0.113.5", 7777, n=2)
    sh(sys.executable, "-c", _LOCAL_SEND, ns=t["output"][0])
    send_udp(t["tc"][0], "198.51.100.2", 7777, n=2)
    send_udp(t["qdisc"][0], "198.51.100.2", 7777, n=6, size=1000)
    send_udp(t["link"][1], "198.51.100.2", 7777, n=2)
    sh(sys.executable, "-c", test_checksum._BAD_UDP, ns=t["checksum"][1])
    send_udp(t["ipv6"][0], "2001:db8:2::2", 7777, n=2)
    send_udp(t["ipv6"][0], "2001:db8:9::2", 7778, n=2)
    send_udp(t["ipv6-off"][0], "2001:db8:2::2", 7777, n=2)
    c, r, _ = t["martian"]
    mac = sh("cat", "/sys/class/net/r-cli/address", ns=r).stdout.strip().replace(":", "")
    sh(sys.executable, "-c", test_martian._FRAMES.format(mac=mac, cases=test_martian.CASES), ns=c)
    sh("python3", "-c", test_tcp._CLIENT, ns=t["tcp"][0])
    send_from_port(t["svc"][0], 2)
    # The neighbour drops come last: ARP gives up after 3 probes a second apart.
    neigh = t["neighbour"][1]
    assert dt.wait_for_event(lambda e: e["netns"] == neigh and e["dport"] == 7777, 20)


def test_a_mixed_run_of_every_reproduction_leaves_no_drop_unexplained(
    netns: MakeNetns, tmp_path: Path
) -> None:
    f = build(netns, tmp_path)
    t = f.topos
    args = ["--json", "--all", "--duration", "60"]
    for name in f.made:
        args += ["--netns", name]
    with (
        background(t["tcp"][1], test_tcp._SERVER) as tcp_server,
        background(t["conntrack"][2], test_conntrack._SERVER) as ct_server,
    ):
        for proc in (tcp_server, ct_server):
            assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        with background(t["conntrack"][0], test_conntrack._CLIENT) as held:
            assert held.stdout is not None and held.stdout.readline().strip() == "connected"
            send_from_port(t["svc"][0], 1)  # the flow passes once; then the backend's policy
            sh("iptables", "-A", "FORWARD", "-d", "198.51.100.2", "-j", "DROP", ns=t["svc"][1])
            with Droptrace(*args) as dt:
                send_all(t, dt)
                dt.interrupt()
                res = dt.wait()
    events = res.events
    unexplained = [(e["reason"], e["location"]) for e in events if e["category"] == "other"]
    assert not [e for e in events if e["category"] == "other" and not e["benign"]], unexplained
    seen = collections.Counter(e["category"] for e in events if not e["benign"])
    assert set(seen) >= EXPECTED, seen
    assert any(e["category"] == "tcp" and e["benign"] for e in events), events
