"""Explain: the rule that dropped it, the sysctl that decided it, and a fix that works."""

from __future__ import annotations

import pytest

from tests.helpers import (
    Droptrace,
    MakeNetns,
    link,
    routed_udp_topology,
    send_icmp_echo_reply,
    send_udp,
    sh,
    spoofing_pair,
)

pytestmark = pytest.mark.root


def watch_router(router: str, client: str, port: int = 5353, *args: str) -> list[dict[str, object]]:
    with Droptrace("--json", "--netns", router, "--duration", "4", *args) as dt:
        send_udp(client, "198.51.100.2", port, n=2)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    return [e for e in res.events if e.get("dport") == port]  # counter lines are no drops


def test_reject_in_a_custom_iptables_nft_chain_is_named_with_its_comment(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    comment = "default/web has no endpoints"
    sh("iptables", "-N", "KUBE-EXTERNAL-SERVICES", ns=router)
    sh("iptables", "-A", "FORWARD", "-j", "KUBE-EXTERNAL-SERVICES", ns=router)
    sh("iptables", "-A", "KUBE-EXTERNAL-SERVICES", "-p", "udp", "-d", "198.51.100.2",
       "--dport", "5353", "-m", "comment", "--comment", comment,
       "-j", "REJECT", "--reject-with", "icmp-port-unreachable", ns=router)  # fmt: skip
    drops = watch_router(router, client)
    assert len(drops) == 2, drops
    ev = drops[0]
    assert ev["category"] == "netfilter"
    rule = ev["rule"]
    assert isinstance(rule, dict)
    assert (rule["table"], rule["chain"], rule["comment"]) == (
        "filter",
        "KUBE-EXTERNAL-SERVICES",
        comment,
    )
    assert rule["text"].startswith("-A KUBE-EXTERNAL-SERVICES") and "-j REJECT" in rule["text"]
    assert "KUBE-EXTERNAL-SERVICES" in str(ev["explanation"])


def test_legacy_rule_without_match_is_told_to_drop_everything(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("iptables-legacy", "-N", "KUBE-FIREWALL", ns=router)
    sh("iptables-legacy", "-A", "FORWARD", "-j", "KUBE-FIREWALL", ns=router)
    sh("iptables-legacy", "-A", "KUBE-FIREWALL", "-m", "comment", "--comment",
       "kubernetes firewall for dropping marked packets", "-j", "DROP", ns=router)  # fmt: skip
    drops = watch_router(router, client)
    assert drops and drops[0]["location"] == "nf_hook_slow"
    rule = drops[0]["rule"]
    assert isinstance(rule, dict) and rule["chain"] == "KUBE-FIREWALL"
    assert drops[0]["evidence"]["rule_matches_everything"] is True  # type: ignore[index]
    assert "drops every packet" in str(drops[0]["explanation"])


def test_native_nft_inet_table_drop_names_table_chain_and_handle(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("nft", "add table inet guard", ns=router)
    sh("nft", "add chain inet guard through { type filter hook forward priority 0; }", ns=router)
    sh(
        "nft",
        'add rule inet guard through udp dport 5353 counter drop comment "no dns here"',
        ns=router,
    )
    drops = watch_router(router, client)
    assert drops, drops
    rule = drops[0]["rule"]
    assert isinstance(rule, dict)
    assert (rule["family"], rule["table"], rule["chain"]) == ("nft inet", "guard", "through")
    assert rule["comment"] == "no dns here" and isinstance(rule["handle"], int)


def test_forwarding_off_on_the_receiving_interface_only(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("sysctl", "-qw", "net.ipv4.conf.r-cli.forwarding=0", ns=router)  # ip_forward stays 1
    drops = watch_router(router, client)
    assert len(drops) == 2, drops
    ev = drops[0]
    assert (ev["category"], ev["iface"], ev["netns"]) == ("forwarding_disabled", "r-cli", router)
    assert ev["evidence"]["forwarding"] == {"ip_forward": 1, "all": 1, "r-cli": 0}  # type: ignore[index]
    fix = str(ev["fix"])
    assert fix.startswith("sysctl -w net.ipv4.conf.r-cli.forwarding=1")
    # The fix, applied, lets the same traffic through: nothing dropped on the router any more.
    sh("sysctl", "-qw", "net.ipv4.conf.r-cli.forwarding=1", ns=router)
    assert watch_router(router, client) == []


@pytest.mark.parametrize(("all_", "iface"), [(0, 1), (1, 0)])
def test_strict_rp_filter_is_the_max_of_all_and_iface_and_loose_fixes_it(
    netns: MakeNetns, all_: int, iface: int
) -> None:
    client, router = spoofing_pair(netns)
    sh("sysctl", "-qw", f"net.ipv4.conf.all.rp_filter={all_}", ns=router)
    sh("sysctl", "-qw", f"net.ipv4.conf.r-cli.rp_filter={iface}", ns=router)

    def drops() -> list[dict[str, object]]:
        with Droptrace(
            "--json", "--netns", router, "--reason", "IP_RPFILTER", "--duration", "3"
        ) as dt:
            send_udp(client, "192.0.2.1", 7000, n=2, src="198.51.100.77")
            return dt.wait().events

    seen = drops()
    assert len(seen) == 2, seen
    ev = seen[0]
    assert ev["category"] == "rp_filter"
    assert ev["evidence"]["rp_filter"] == {"all": all_, "r-cli": iface, "effective": 1}  # type: ignore[index]
    assert ev["evidence"]["route_back"]["oif"] == "r-oth"  # type: ignore[index]
    assert "strict" in str(ev["explanation"]) and "max(conf.all" in str(ev["explanation"])
    fix = str(ev["fix"])
    assert fix.startswith("sysctl -w net.ipv4.conf.r-cli.rp_filter=2")
    sh("sysctl", "-qw", "net.ipv4.conf.r-cli.rp_filter=2", ns=router)
    assert drops() == []


def test_frames_for_another_hosts_mac_are_counted_but_hidden_unless_all(netns: MakeNetns) -> None:
    a, b = netns("a"), netns("b")
    link(a, b, "eth0", "eth0", "192.0.2.1/24", "192.0.2.2/24")
    # A neighbour entry with a MAC that is not b's: b receives the frame as PACKET_OTHERHOST.
    sh("ip", "neigh", "replace", "192.0.2.2", "lladdr", "02:00:00:00:00:99", "dev", "eth0", ns=a)
    for extra, shown in (((), 0), (("--all",), 2)):
        with Droptrace("--json", "--netns", b, "--duration", "3", *extra) as dt:
            send_udp(a, "192.0.2.2", 9, n=2)
            res = dt.wait()
        assert len(res.events) == shown, res.events
        assert all(e["reason"] == "OTHERHOST" and e["benign"] for e in res.events)
        assert "OTHERHOST 2" in res.stderr  # counted either way


@pytest.mark.parametrize("kind", ["blackhole", "unreachable", "prohibit"])
def test_blackhole_unreachable_and_prohibit_routes_are_no_route_with_the_route_named(
    netns: MakeNetns, kind: str
) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("ip", "route", "add", kind, "198.51.100.2/32", ns=router)
    drops = watch_router(router, client)
    assert drops, drops
    ev = drops[0]
    assert (ev["category"], ev["iface"]) == ("no_route", "r-cli"), ev
    assert ev["evidence"]["route"]["type"] == kind, ev  # type: ignore[index]
    assert f"a {kind} route" in str(ev["explanation"])
    # The fix: remove the route; the same traffic then reaches the server's closed port and
    # nothing is dropped on the router any more.
    assert "remove" in str(ev["fix"])
    sh("ip", "route", "del", kind, "198.51.100.2/32", ns=router)
    assert watch_router(router, client) == []


def test_policy_routing_names_the_rule_and_table_that_had_no_route(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    # Traffic from the client is looked up in table 100, where nothing but 203.0.113.0/24 is
    # reachable; the main table would have routed it.
    sh("ip", "route", "add", "203.0.113.0/24", "dev", "r-srv", "table", "100", ns=router)
    sh("ip", "route", "add", "unreachable", "default", "table", "100", ns=router)
    sh("ip", "rule", "add", "from", "192.0.2.2", "lookup", "100", "priority", "100", ns=router)
    drops = watch_router(router, client)
    assert drops, drops
    ev = drops[0]
    assert ev["category"] == "no_route", ev
    explanation = str(ev["explanation"])
    assert "table 100" in explanation and "from 192.0.2.2 lookup 100" in explanation, explanation


def test_rule_dropping_conntrack_invalid_is_told_as_conntrack_with_the_rule(
    netns: MakeNetns,
) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID",
       "-j", "DROP", ns=router)  # fmt: skip
    with Droptrace("--json", "--netns", router, "--duration", "4") as dt:
        send_icmp_echo_reply(client, "198.51.100.2")
        res = dt.wait()
    drops = [e for e in res.events if e["proto"] == "icmp"]
    assert drops, res.events
    ev = drops[0]
    assert ev["category"] == "conntrack", ev
    rule = ev["rule"]
    assert isinstance(rule, dict) and "--ctstate INVALID" in rule["text"]
    assert "INVALID" in str(ev["explanation"])
