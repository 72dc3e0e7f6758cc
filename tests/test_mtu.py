"""Too big for the next link: the egress link and its MTU, the packet's length, a tunnel's
overhead, and the MTU to set."""

from __future__ import annotations

import pytest

from tests.helpers import Droptrace, MakeNetns, routed_udp_topology, run_cli, send_df, sh

pytestmark = pytest.mark.root


def test_a_df_packet_larger_than_the_next_link_is_mtu_with_both_links_and_the_mtu_to_set(
    netns: MakeNetns,
) -> None:
    client, router, server = routed_udp_topology(netns)
    sh("ip", "link", "set", "r-srv", "mtu", "1280", ns=router)
    sh("ip", "link", "set", "eth0", "mtu", "1280", ns=server)
    with Droptrace("--json", "--netns", router, "--duration", "4") as dt:
        send_df(client, "198.51.100.2", 7777, 1400)
        res = dt.wait()
    drops = [e for e in res.events if e["dport"] == 7777]
    assert drops, res.events
    ev = drops[0]
    assert (ev["reason"], ev["category"], ev["iface"]) == ("PKT_TOO_BIG", "mtu", "r-cli")
    assert ev["evidence"]["mtu"] == {
        "packet_len": 1428,
        "df": True,
        "egress": "r-srv",
        "egress_mtu": 1280,
        "ingress": "r-cli",
        "ingress_mtu": 1500,
        "pmtu": None,
    }
    assert "too big for the next link r-srv (mtu 1280)" in ev["explanation"]
    assert "ICMP fragmentation needed (mtu 1280)" in ev["explanation"]
    assert ev["fix"].startswith("set the MTU of 192.0.2.2's interface to 1280 or less")
    assert "TCPMSS --clamp-mss-to-pmtu" in ev["fix"]


def test_a_packet_too_big_for_a_vxlan_overlay_names_the_tunnel_and_its_overhead(
    netns: MakeNetns,
) -> None:
    client, router, _ = routed_udp_topology(netns)
    # An overlay to the server over r-srv (mtu 1500): vxlan0 at 1450 is right (1500 - 50).
    sh("ip", "link", "add", "vxlan0", "type", "vxlan", "id", "42", "remote", "198.51.100.2",
       "dstport", "4789", "dev", "r-srv", ns=router)  # fmt: skip
    sh("ip", "link", "set", "vxlan0", "mtu", "1450", "up", ns=router)
    sh("ip", "addr", "add", "198.18.7.1/24", "dev", "vxlan0", ns=router)
    with Droptrace("--json", "--netns", router, "--duration", "4") as dt:
        send_df(client, "198.18.7.2", 7777, 1460)
        res = dt.wait()
    drops = [e for e in res.events if e["dport"] == 7777]
    assert drops, res.events
    ev = drops[0]
    assert ev["category"] == "mtu", ev
    mtu = ev["evidence"]["mtu"]
    assert (mtu["egress"], mtu["egress_mtu"], mtu["packet_len"]) == ("vxlan0", 1450, 1488)
    assert mtu["tunnel"] == {"kind": "vxlan", "overhead": 50, "lower": "r-srv", "lower_mtu": 1500}
    assert "vxlan0 is a tunnel (vxlan): 50 bytes of overhead" in ev["explanation"]
    assert ev["fix"].startswith("set pod and tunnel MTUs to r-srv's mtu 1500 minus 50")


def test_doctor_flags_an_overlay_larger_than_its_underlay_and_pod_veths_larger_than_both(
    netns: MakeNetns,
) -> None:
    _, router, _ = routed_udp_topology(netns)
    sh("ip", "link", "add", "vxlan0", "type", "vxlan", "id", "42", "remote", "198.51.100.2",
       "dstport", "4789", "dev", "r-srv", ns=router)  # fmt: skip
    sh("ip", "link", "set", "r-srv", "mtu", "1400", ns=router)  # the uplink shrank later
    res = run_cli("doctor", "--netns", router)
    assert res.rc == 1, res.stdout
    assert "vxlan0 (vxlan, mtu 1450) is larger than r-srv's mtu 1400 minus its 50-byte" in (
        res.stdout
    )
    # r-cli plays a pod's veth: 1500 cannot cross the 1450 overlay; r-srv is the underlay.
    assert "veths r-cli have a larger mtu than the tunnel vxlan0 (mtu 1450)" in res.stdout
