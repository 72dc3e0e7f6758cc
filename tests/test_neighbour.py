"""Neighbour failures name the next hop: the gateway of the route, not the destination."""

from __future__ import annotations

import pytest

from tests.helpers import Droptrace, MakeNetns, routed_udp_topology, send_udp, sh

pytestmark = pytest.mark.root


def neighbour_drops(router: str, client: str) -> list[dict[str, object]]:
    # ARP gives up after mcast_solicit (3) probes a second apart: then the queue is dropped.
    with Droptrace("--json", "--netns", router, "--duration", "8") as dt:
        send_udp(client, "203.0.113.5", 7777, n=2)
        res = dt.wait()
    return [e for e in res.events if e["dport"] == 7777]


def test_a_gateway_that_never_answers_arp_is_named_as_the_next_hop(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.9", ns=router)
    drops = neighbour_drops(router, client)
    assert drops, "no neighbour drop"
    ev = drops[0]
    assert (ev["reason"], ev["category"], ev["iface"]) == ("NEIGH_FAILED", "neighbour", "r-srv")
    hop = ev["evidence"]["next_hop"]  # type: ignore[index]
    assert (hop["via"], hop["dev"], hop["gateway"], hop["on_link"]) == (
        "198.51.100.9",
        "r-srv",
        True,
        True,
    )
    assert hop["state"] in ("FAILED", "INCOMPLETE", None), hop
    assert "next hop 198.51.100.9 (the gateway of the route to 203.0.113.5) on r-srv" in str(
        ev["explanation"]
    )
    assert str(ev["fix"]).startswith("198.51.100.9 is down or not on r-srv's link")


def test_a_gateway_on_another_links_subnet_is_told_as_the_wrong_link(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    # 192.0.2.99 is in r-cli's subnet, but the route sends the packets out of r-srv.
    sh("ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.99", "dev", "r-srv", "onlink",
       ns=router)  # fmt: skip
    drops = neighbour_drops(router, client)
    assert drops, "no neighbour drop"
    ev = drops[0]
    assert ev["category"] == "neighbour"
    hop = ev["evidence"]["next_hop"]  # type: ignore[index]
    assert (hop["via"], hop["on_link"], hop["subnet_of"]) == ("192.0.2.99", False, "r-cli")
    assert "wrong link" in str(ev["fix"]) and "dev r-cli" in str(ev["fix"])
