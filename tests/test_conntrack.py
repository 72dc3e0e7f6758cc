"""Conntrack itself drops: a full table looks like a rule's NETFILTER_DROP at nf_hook_slow,
and droptrace tells it apart by the statistics that moved while no rule counter did."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    Droptrace,
    MakeNetns,
    Result,
    background,
    routed_udp_topology,
    send_udp,
    sh,
)

pytestmark = pytest.mark.root

_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")
_FLOWS = 16
# A server that accepts and holds every connection; a client that opens _FLOWS of them and
# keeps them established (assured entries, which early drop may not evict).
_SERVER = """
import socket, time
l = socket.socket(); l.bind(("0.0.0.0", 8080)); l.listen(64); held = []
print("listening", flush=True)
while True: held.append(l.accept())
"""
_CLIENT = f"""
import socket, time
held = [socket.create_connection(("198.51.100.2", 8080), timeout=5) for _ in range({_FLOWS})]
print("connected", flush=True); time.sleep(60)
"""


@contextmanager
def conntrack_max(value: int) -> Iterator[None]:
    """nf_conntrack_max is global (only the host namespace may set it): lowered for the
    shortest time the test needs, and always restored."""
    old = _MAX.read_text()
    try:
        _MAX.write_text(str(value))
        yield
    finally:
        _MAX.write_text(old)


def count_in(ns: str) -> int:
    return int(sh("cat", "/proc/sys/net/netfilter/nf_conntrack_count", ns=ns).stdout)


def is_udp(e: dict[str, Any]) -> bool:
    return e["dport"] == 7777 and e["reason"] == "NETFILTER_DROP"


def overflow(client: str, router: str) -> Result:
    """The router's table lowered to what it holds, one new flow sent, the drop read."""
    entries = count_in(router)
    assert entries >= _FLOWS
    with Droptrace("--json", "--netns", router, "--duration", "20") as dt:
        with conntrack_max(entries):
            send_udp(client, "198.51.100.2", 7777, n=3)
            seen = dt.wait_for_event(is_udp, 20)
        assert seen, dt.wait().stderr
        dt.interrupt()
        return dt.wait()


def test_full_conntrack_table_is_conntrack_not_a_rule_with_count_max_and_top_source(
    netns: MakeNetns,
) -> None:
    client, router, server = routed_udp_topology(netns)
    # Any conntrack match makes the router track connections, as kube-proxy's rules do.
    sh("iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
       "-j", "ACCEPT", ns=router)  # fmt: skip
    with background(server, _SERVER) as listening:
        assert listening.stdout is not None and listening.stdout.readline().strip() == "listening"
        with background(client, _CLIENT) as held:
            assert held.stdout is not None and held.stdout.readline().strip() == "connected"
            res = overflow(client, router)
    drops = [e for e in res.events if is_udp(e)]
    ev = drops[0]
    assert (ev["category"], ev["location"], ev["iface"]) == ("conntrack", "nf_hook_slow", "r-cli")
    assert ev["rule"] is None
    table = ev["evidence"]["conntrack"]
    assert table["count"] == table["max"] >= _FLOWS, table
    assert table["stats"]["drop"] >= 1
    assert table["top_sources"][0] == {"src": "192.0.2.2", "entries": _FLOWS}
    assert "conntrack table of netns" in ev["explanation"] and "is full" in ev["explanation"]
    assert "no rule did" in ev["explanation"]
    assert "net.netfilter.nf_conntrack_max=" in ev["fix"] and "192.0.2.2" in ev["fix"]


def test_with_room_in_the_table_a_drop_rule_is_still_the_rules(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
       "-j", "ACCEPT", ns=router)  # fmt: skip
    sh("iptables", "-A", "FORWARD", "-p", "udp", "--dport", "7777", "-j", "DROP", ns=router)
    with Droptrace("--json", "--netns", router, "--duration", "4") as dt:
        send_udp(client, "198.51.100.2", 7777, n=2)
        res = dt.wait()
    drops = [e for e in res.events if e["dport"] == 7777]
    assert drops and all(e["category"] == "netfilter" for e in drops), drops
    assert "conntrack" not in drops[0]["evidence"]
