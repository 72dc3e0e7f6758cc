"""IPv6 is told like IPv4: ip6tables rules in their ip6tables-save form with comments,
IPv6 forwarding off, no IPv6 route, a packet too big for the next link."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Droptrace, MakeNetns, run_cli, send_df, send_udp, sh

pytestmark = pytest.mark.root


def v6_link(a: str, b: str, a_if: str, b_if: str, a_addr: str, b_addr: str) -> None:
    sh("ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b)
    for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
        sh("ip", "addr", "add", addr, "dev", ifname, "nodad", ns=ns)
        sh("ip", "link", "set", ifname, "up", ns=ns)


def v6_topology(netns: MakeNetns) -> tuple[str, str, str]:
    """client 2001:db8:1::2 --- router (IPv6 forwarding on) --- server 2001:db8:2::2."""
    client, router, server = netns("cli6"), netns("rtr6"), netns("srv6")
    for ns in (client, router, server):  # the fixture turns IPv6 off: this test needs it
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", ns=ns)
        sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0", ns=ns)
    v6_link(client, router, "eth0", "r-cli", "2001:db8:1::2/64", "2001:db8:1::1/64")
    v6_link(router, server, "r-srv", "eth0", "2001:db8:2::1/64", "2001:db8:2::2/64")
    sh("ip", "-6", "route", "add", "default", "via", "2001:db8:1::1", ns=client)
    sh("ip", "-6", "route", "add", "default", "via", "2001:db8:2::1", ns=server)
    sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=router)
    return client, router, server


def drops_of(router: str, send: Any, port: int) -> list[dict[str, Any]]:
    with Droptrace("--json", "--netns", router, "--duration", "4") as dt:
        send()
        res = dt.wait()
    assert res.rc == 0, res.stderr
    return [e for e in res.events if e.get("dport") == port]  # counter lines are no drops


def test_an_ip6tables_rule_is_named_in_its_ip6tables_save_form_with_its_comment(
    netns: MakeNetns,
) -> None:
    client, router, _ = v6_topology(netns)
    sh("ip6tables", "-A", "FORWARD", "-p", "udp", "--dport", "7777", "-m", "comment",
       "--comment", "no v6 dns", "-j", "DROP", ns=router)  # fmt: skip
    drops = drops_of(router, lambda: send_udp(client, "2001:db8:2::2", 7777, n=2), 7777)
    assert len(drops) == 2, drops
    for ev in drops:
        assert ev["category"] == "netfilter", ev
        rule = ev["rule"]
        assert (rule["family"], rule["table"], rule["chain"], rule["comment"]) == (
            "ipv6",
            "filter",
            "FORWARD",
            "no v6 dns",
        )
        assert rule["text"] == (
            '-A FORWARD -p udp -m udp --dport 7777 -m comment --comment "no v6 dns" -j DROP'
        )
        assert "counter packets" not in ev["explanation"]


def test_ipv6_forwarding_off_is_forwarding_disabled_with_the_ipv6_sysctl(
    netns: MakeNetns,
) -> None:
    client, router, _ = v6_topology(netns)
    sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=0", ns=router)
    drops = drops_of(router, lambda: send_udp(client, "2001:db8:2::2", 7777, n=2), 7777)
    assert drops, "no drop"
    ev = drops[0]
    assert (ev["reason"], ev["category"], ev["iface"]) == (
        "IP_INADDRERRORS",
        "forwarding_disabled",
        "r-cli",
    )
    fwd = ev["evidence"]["forwarding"]
    assert (fwd["family"], fwd["all"], fwd["r-cli"]) == ("ipv6", 0, 0), fwd
    assert "IPv6 forwarding is disabled in netns" in ev["explanation"]
    assert "net.ipv6.conf.all.forwarding=0" in ev["explanation"]
    assert ev["fix"].startswith("sysctl -w net.ipv6.conf.all.forwarding=1")
    doctor = run_cli("doctor", "--netns", router)
    assert doctor.rc == 1 and "IPv6 forwarding off in netns" in doctor.stdout, doctor.stdout
    sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=router)  # the fix, applied
    assert drops_of(router, lambda: send_udp(client, "2001:db8:2::2", 7777, n=2), 7777) == []


def test_no_ipv6_route_is_no_route_even_with_ipv4_forwarding_off(netns: MakeNetns) -> None:
    client, router, _ = v6_topology(netns)  # net.ipv4.ip_forward stays 0: not this drop's
    drops = drops_of(router, lambda: send_udp(client, "2001:db8:9::2", 7778, n=2), 7778)
    assert drops, "no drop"
    ev = drops[0]
    assert (ev["reason"], ev["category"]) == ("IP_INNOROUTES", "no_route"), ev
    assert ev["evidence"]["route"]["type"] == "none"
    assert "no route to 2001:db8:9::2" in ev["explanation"]
    assert "ip -6 route add" in ev["fix"]


def test_an_ipv6_packet_too_big_for_the_next_link_is_mtu(netns: MakeNetns) -> None:
    client, router, _ = v6_topology(netns)
    sh("ip", "link", "set", "r-srv", "mtu", "1280", ns=router)
    drops = drops_of(router, lambda: send_df(client, "2001:db8:2::2", 7779, 1400), 7779)
    assert drops, "no drop"
    ev = drops[0]
    assert (ev["reason"], ev["category"]) == ("PKT_TOO_BIG", "mtu"), ev
    assert (ev["evidence"]["mtu"]["egress"], ev["evidence"]["mtu"]["egress_mtu"]) == ("r-srv", 1280)
    assert "IPv6 routers never fragment" in ev["explanation"]
