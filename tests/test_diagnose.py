"""Each cause module's explanation and fix from typed evidence, and its doctor check (no root).

The evidence records are what enrichment reads on a real node; here they are written down
as a field report gives them, so every cause's wording and advice is pinned without a kernel.
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address, ip_address

from tracer import diagnose
from tracer.diagnose import (
    bridge_netfilter,
    conntrack,
    forwarding,
    link,
    martian,
    mtu,
    rp_filter,
)
from tracer.model import Category, Drop, Facts, Rule
from tracer.model.devices import (
    ChecksumFacts,
    Link,
    LinkState,
    PacketTooBig,
    Qdisc,
    QdiscStats,
    TcFilters,
    TcProgram,
)
from tracer.model.evidence import (
    ConntrackTable,
    Dnat,
    Evidence,
    Forwarding,
    IfaceFromRoute,
    Martian,
    NextHop,
    RouteLookup,
    Routing,
    RpFilter,
    RuleSource,
    TcpCounters,
    evidence_json,
)
from tracer.model.findings import Level, NamespaceFacts


def drop(src: str = "203.0.113.7", dst: str = "198.18.0.5", sport: int = 443) -> Drop:
    s, d = ip_address(src), ip_address(dst)
    return Drop(0, 0, 0, 1, 2, 60, 0, 0x800, 6, s, d, sport, 40000, None, None, 1)


def facts(
    reason: str,
    *evidence: Evidence,
    iface: str = "eth2",
    location: str = "ip_rcv_finish",
    rule: Rule | None = None,
) -> Facts:
    now = datetime.now(UTC)
    return Facts(now, reason, location, iface, "node", tuple(evidence), rule)


def unicast(dst: str, oif: str) -> RouteLookup:
    return RouteLookup(dst, "unicast", oif=oif, gateway="198.51.100.1", table=254)


def test_masquerade_reply_on_another_link_is_a_strict_rp_filter_drop_fixed_by_loose() -> None:
    ev = RpFilter("eth2", all=0, on_iface=1, route_back=unicast("203.0.113.7", "eth1"))
    d = diagnose.diagnose(drop(), facts("IP_RPFILTER", ev))
    assert d.category is Category.RP_FILTER
    assert "strict" in d.explanation
    assert "effective 1 = max(conf.all=0, conf.eth2=1)" in d.explanation
    assert "leaves via eth1, not eth2" in d.explanation
    assert d.fix is not None and d.fix.startswith("sysctl -w net.ipv4.conf.eth2.rp_filter=2")


def test_the_most_specific_rp_filter_does_not_win_the_maximum_does() -> None:
    # The seed's claim: conf.eth2=2 (loose) wins over conf.all=1. The kernel takes the max.
    ev = RpFilter("eth2", all=1, on_iface=0, route_back=unicast("203.0.113.7", "eth1"))
    assert ev.effective == 1
    assert evidence_json((ev,))["rp_filter"] == {"all": 1, "eth2": 0, "effective": 1}


def test_loose_rp_filter_with_no_route_back_says_loose_would_drop_it_too() -> None:
    ev = RpFilter("eth2", 2, 2, RouteLookup("203.0.113.7", "none", error="no route"))
    d = diagnose.diagnose(drop(), facts("IP_RPFILTER", ev))
    assert "no route back to 203.0.113.7 at all" in d.explanation
    assert d.fix is not None and "loose mode would drop it too" in d.fix


def test_ip_forward_off_on_the_node_is_forwarding_disabled_not_no_route() -> None:
    fwd = Forwarding("veth-pod-a", ip_forward=0, all=0, on_iface=0)
    route = unicast("198.18.2.2", "eth1")
    f = facts("IP_INADDRERRORS", fwd, Routing(route, route), iface="veth-pod-a")
    d = diagnose.diagnose(drop(dst="198.18.2.2"), f)
    assert d.category is Category.FORWARDING_DISABLED
    assert "net.ipv4.conf.veth-pod-a.forwarding=0, ip_forward=0" in d.explanation
    assert d.fix is not None and d.fix.startswith("sysctl -w net.ipv4.ip_forward=1")


def test_forwarding_off_on_one_interface_names_that_interface() -> None:
    fwd = Forwarding("r-cli", ip_forward=1, all=1, on_iface=0)
    route = unicast("198.18.2.2", "r-srv")
    f = facts("IP_INADDRERRORS", fwd, Routing(route, route), iface="r-cli", location="ip_error")
    d = diagnose.diagnose(drop(), f)
    assert d.fix == f"{forwarding.iface_on('r-cli')} in netns node"


def test_no_route_to_the_other_pod_cidr_says_which_route_to_add() -> None:
    missing = RouteLookup("198.18.2.2", "none", error="Network is unreachable")
    fwd = Forwarding("veth-pod-a", 1, 1, 1)
    d = diagnose.diagnose(drop(), facts("IP_INNOROUTES", fwd, Routing(missing, missing)))
    assert d.category is Category.NO_ROUTE
    assert "no route to 198.18.0.5" in d.explanation
    assert d.fix is not None and "ip route add" in d.fix


def test_a_blackhole_route_chosen_by_an_ip_rule_names_the_rule_and_its_table() -> None:
    plain = unicast("198.18.0.5", "eth1")
    hole = RouteLookup("198.18.0.5", "blackhole", table=100, policy_rule="100: from all lookup 100")
    d = diagnose.diagnose(
        drop(), facts("IP_INNOROUTES", Forwarding("eth2", 1, 1, 1), Routing(plain, hole))
    )
    assert d.category is Category.NO_ROUTE
    assert "a blackhole route in table 100 matches 198.18.0.5" in d.explanation
    assert "(ip rule 100: from all lookup 100 chose table 100)" in d.explanation
    assert d.fix is not None and "change the ip rule" in d.fix


def test_hairpin_reply_from_the_backend_is_bridge_netfilter_not_a_closed_port() -> None:
    ev = Dnat("node", IPv4Address("198.19.0.10"), 80, "198.18.1.3", "ESTABLISHED", 0)
    d = diagnose.diagnose(drop("198.18.1.3", "198.18.1.2", 8080), facts("NO_SOCKET", ev))
    assert d.category is Category.BRIDGE_NETFILTER
    assert "instead of from the service 198.19.0.10:80" in d.explanation
    assert "net.bridge.bridge-nf-call-iptables=0 in netns node" in d.explanation
    assert d.fix is not None and d.fix.startswith(bridge_netfilter.FIX)
    assert evidence_json((ev,))["dnat"] == {
        "netns": "node",
        "service": "198.19.0.10:80",
        "backend": "198.18.1.3",
        "conntrack_state": "ESTABLISHED",
    }


def test_a_reply_after_dnat_with_bridge_netfilter_on_is_just_no_socket() -> None:
    ev = Dnat("node", IPv4Address("198.19.0.10"), 80, "198.18.1.3", "ESTABLISHED", 1)
    d = diagnose.diagnose(drop(), facts("NO_SOCKET", ev))
    assert d.category is Category.NO_SOCKET
    assert d.fix is not None and d.fix.startswith("start the service")


def test_corrupted_kube_firewall_rule_matches_every_packet_and_says_how_to_delete_it() -> None:
    rule = Rule("ipv4", "filter", "KUBE-FIREWALL", "-A KUBE-FIREWALL -j DROP")
    f = facts("NETFILTER_DROP", RuleSource("counters", True), rule=rule, iface="veth-pod")
    d = diagnose.diagnose(drop(), f)
    assert d.category is Category.NETFILTER
    assert "table filter, chain KUBE-FIREWALL: -A KUBE-FIREWALL -j DROP" in d.explanation
    assert "drops every packet" in d.explanation
    assert d.fix is not None and d.fix.endswith("iptables -t filter -D KUBE-FIREWALL -j DROP")


def test_a_rule_dropping_invalid_packets_is_a_conntrack_cause_not_a_firewall_one() -> None:
    rule = Rule("ipv4", "filter", "FORWARD", "-A FORWARD -m conntrack --ctstate INVALID -j DROP")
    d = diagnose.diagnose(drop(), facts("NETFILTER_DROP", RuleSource("nftrace", False), rule=rule))
    assert d.category is Category.CONNTRACK
    assert "INVALID" in d.explanation
    assert d.fix is not None and "asymmetric routing" in d.fix


def test_reasons_alone_name_a_cause_where_no_evidence_was_read() -> None:
    assert diagnose.diagnose(drop(), facts("NEIGH_FAILED")).category is Category.NEIGHBOUR
    assert diagnose.diagnose(drop(), facts("IP_RPFILTER")).category is Category.RP_FILTER
    assert diagnose.diagnose(drop(), facts("NETFILTER_DROP")).category is Category.NETFILTER
    closed = diagnose.diagnose(drop(), facts("NO_SOCKET"))
    assert closed.category is Category.NO_SOCKET and closed.fix is not None
    unknown = diagnose.diagnose(drop(), facts("SOME_NEW_REASON"))
    assert unknown.category is Category.OTHER
    assert "the kernel dropped it (SOME_NEW_REASON)" in unknown.explanation


def test_ipv6_start_up_noise_is_benign_and_real_drops_are_not() -> None:
    noise = Drop(0, 0, 0, 1, 2, 60, 0, 0x86DD, 58, IPv6Address("fe80::1"),
                 IPv6Address("ff02::2"), None, None, 133, 0, 1)  # fmt: skip
    assert diagnose.diagnose(noise, facts("IPV6_NOROUTE")).benign
    assert diagnose.diagnose(drop(), facts("OTHERHOST")).benign
    assert not diagnose.diagnose(drop(), facts("NO_SOCKET")).benign


def test_category_of_a_reason_comes_from_the_cause_that_owns_it() -> None:
    assert diagnose.category_of("NO_SOCKET") is Category.NO_SOCKET
    assert diagnose.category_of("NEIGH_DEAD") is Category.NEIGHBOUR
    assert diagnose.category_of("IP_INNOROUTES") is Category.NO_ROUTE
    assert diagnose.category_of("TC_EGRESS") is Category.TC
    assert diagnose.category_of("SOME_NEW_REASON") is Category.OTHER


def node(**sysctls: int | None) -> NamespaceFacts:
    values = {k.replace("__", "."): v for k, v in sysctls.items()}
    return NamespaceFacts("node", values, ["eth0", "eth1"], [], True, {"nft": 3, "legacy": 0})


def test_doctor_and_the_live_drop_give_the_same_rp_filter_command() -> None:
    findings = rp_filter.doctor(
        node(**{"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.eth1.rp_filter": 1})
    )
    assert [f.level for f in findings] == [Level.FAIL]
    live = diagnose.diagnose(
        drop(),
        facts("IP_RPFILTER", RpFilter("eth1", 0, 1, unicast("203.0.113.7", "eth0")), iface="eth1"),
    )
    assert findings[0].fix == rp_filter.loose("eth1")
    assert live.fix is not None and live.fix.startswith(rp_filter.loose("eth1"))


def test_doctor_runs_every_cause_check_in_registry_order() -> None:
    f = NamespaceFacts(
        "node",
        {"net.ipv4.ip_forward": 0, "net.bridge.bridge-nf-call-iptables": None},
        ["eth0", "eth1"],
        ["cbr0"],
        False,
        {"nft": 2, "legacy": 1},
    )
    what = [x.what for x in diagnose.doctor(f)]
    assert what[0].startswith("rp_filter in netns node")
    assert what[1].startswith("ip_forward=0 in netns node")
    assert what[2].startswith("br_netfilter is not loaded in netns node")
    assert what[3].startswith("rules in both iptables backends")


def test_every_category_but_other_belongs_to_one_cause_module() -> None:
    owned = [c.category for c in diagnose.CAUSES]
    assert sorted(owned) == sorted(set(owned))
    assert set(owned) == set(Category) - {Category.OTHER}


def test_a_tcp_drop_to_a_local_listener_is_never_a_missing_route() -> None:
    # The last ACK to a listener whose accept queue is full, on lo: NOT_SPECIFIED at
    # tcp_v4_rcv. A route lookup there says nothing; "add a route to 127.0.0.1" misleads.
    local = RouteLookup("127.0.0.1", "local", oif="lo", table=255)
    bogus = RouteLookup("127.0.0.1", "none", error="Invalid argument")
    d = diagnose.diagnose(
        drop("127.0.0.1", "127.0.0.1"),
        facts("NOT_SPECIFIED", Routing(local, bogus), iface="lo", location="tcp_v4_rcv"),
    )
    assert d.category is Category.OTHER
    assert "route" not in (d.fix or "")


def _table(count: int, limit: int, **moved: int) -> ConntrackTable:
    stats = {"drop": 0, "early_drop": 0, "insert_failed": 0, "clash_resolve": 0, "invalid": 0}
    return ConntrackTable(count, limit, 65536, stats | moved, moved, (("198.18.0.9", 900),), 1000)


def test_a_full_conntrack_table_is_conntrack_with_count_max_and_who_fills_it() -> None:
    f = facts("NETFILTER_DROP", _table(1000, 1000, drop=3), location="nf_hook_slow")
    d = diagnose.diagnose(drop(), f)
    assert d.category is Category.CONNTRACK
    assert "net.netfilter.nf_conntrack_count=1000 of net.netfilter.nf_conntrack_max=1000" in (
        d.explanation
    )
    assert "no rule did" in d.explanation and "198.18.0.9 (900)" in d.explanation
    assert d.fix is not None and d.fix.startswith("sysctl -w net.netfilter.nf_conntrack_max=")
    assert "why 198.18.0.9 holds so many" in d.fix and "timeout" in d.fix
    assert evidence_json((_table(1000, 1000, drop=3),))["conntrack"]["top_sources"] == [  # type: ignore[index]
        {"src": "198.18.0.9", "entries": 900}
    ]


def test_an_insert_clash_is_named_as_the_dns_race_not_a_full_table() -> None:
    f = facts("NETFILTER_DROP", _table(40, 262144, insert_failed=1, drop=1))
    d = diagnose.diagnose(drop(sport=53), f)
    assert d.category is Category.CONNTRACK
    assert "insert_failed +1" in d.explanation and "DNS 5 s" in d.explanation
    assert d.fix is not None and "single-request-reopen" in d.fix


def test_a_drop_rule_stays_the_rules_even_while_conntrack_drops_elsewhere() -> None:
    rule = Rule("ipv4", "filter", "FORWARD", "-A FORWARD -p udp -j DROP")
    f = facts(
        "NETFILTER_DROP", _table(1000, 1000, drop=3), RuleSource("counters", False), rule=rule
    )
    assert diagnose.diagnose(drop(), f).category is Category.NETFILTER


def test_doctor_warns_of_a_conntrack_table_near_its_maximum() -> None:
    near = node(**{conntrack.COUNT: 950, conntrack.MAX: 1000})
    assert [x.level for x in conntrack.doctor(near)] == [Level.WARN]
    assert conntrack.doctor(near)[0].fix == conntrack.raise_max(1000)
    assert [
        x.level for x in conntrack.doctor(node(**{conntrack.COUNT: 9, conntrack.MAX: 1000}))
    ] == [Level.OK]
    assert conntrack.doctor(node()) == []


def dev(name: str, mtu: int = 1500, kind: str | None = "veth", **kw: object) -> Link:
    values: dict[str, object] = {"up": True, "carrier": True, "operstate": "UP"} | kw
    return Link(name, 7, kind, mtu, **values)  # type: ignore[arg-type]


def test_a_df_packet_too_big_for_the_way_out_says_which_link_and_the_mtu_to_set() -> None:
    big = PacketTooBig(1428, "198.51.100.2", dev("r-srv", 1280), dev("r-cli"))
    d = diagnose.diagnose(drop(), facts("PKT_TOO_BIG", big, iface="r-cli", location="ip_forward"))
    assert d.category is Category.MTU
    assert "a 1428-byte packet" in d.explanation and "next link r-srv (mtu 1280)" in d.explanation
    assert "it has DF set" in d.explanation and "r-cli (mtu 1500)" in d.explanation
    assert d.fix is not None and d.fix.startswith("set the MTU of 203.0.113.7's interface to 1280")
    assert mtu.MSS_CLAMP in d.fix


def test_an_ipv6_packet_too_big_says_routers_never_fragment_and_icmpv6() -> None:
    v6 = Drop(0, 0, 0, 1, 2, 1448, 0, 0x86DD, 17, IPv6Address("2001:db8:1::2"),
              IPv6Address("2001:db8:2::2"), 4000, 7779, None, None, 1)  # fmt: skip
    big = PacketTooBig(1448, "2001:db8:2::2", dev("r-srv", 1280), None, pmtu=None)
    d = diagnose.diagnose(v6, facts("PKT_TOO_BIG", big, iface="r-srv", location="ip6_forward"))
    assert d.category is Category.MTU
    assert "IPv6 routers never fragment" in d.explanation and "ICMPv6 packet too big" in (
        d.explanation
    )


def test_a_fragmentation_failure_without_a_reason_is_mtu_by_its_location() -> None:
    big = PacketTooBig(1500, "198.51.100.2", dev("tun0", 1480, "ipip"), None, None, dev("eth0"))
    d = diagnose.diagnose(drop(), facts("NOT_SPECIFIED", big, location="ip_fragment"))
    assert d.category is Category.MTU
    assert "tun0 is a tunnel (ipip): 20 bytes of overhead" in d.explanation
    assert d.fix is not None and d.fix.startswith("set pod and tunnel MTUs to eth0's mtu 1500")
    assert mtu.is_too_big("NOT_SPECIFIED", "ip_fragment")
    assert not mtu.is_too_big("NOT_SPECIFIED", "ip_rcv_finish")


def test_doctor_finds_pod_veths_larger_than_the_overlay_but_not_its_underlay() -> None:
    uplink = Link("eth0", 2, None, 1500, True, True, "UP")
    overlay = Link("flannel.1", 3, "vxlan", 1450, True, True, "UP", link_index=2)
    pod = Link("veth1", 4, "veth", 1500, True, True, "UP", link_index=2, link_netnsid=1)
    f = NamespaceFacts("node", {}, ["eth0"], [], False, {}, links=[uplink, overlay, pod])
    (finding,) = mtu.doctor(f)
    assert finding.level is Level.WARN
    assert "veths veth1 have a larger mtu than the tunnel flannel.1 (mtu 1450)" in finding.what
    assert mtu.doctor(NamespaceFacts("node", {}, [], [], False, {}, links=[uplink])) == []


def test_a_neighbour_failure_names_the_gateway_not_the_destination() -> None:
    hop = NextHop("198.51.100.9", "r-srv", True, "FAILED", None, True)
    d = diagnose.diagnose(drop(dst="203.0.113.5"), facts("NEIGH_FAILED", hop, iface="r-srv"))
    assert d.category is Category.NEIGHBOUR
    assert "next hop 198.51.100.9 (the gateway of the route to 203.0.113.5)" in d.explanation
    assert "neighbour entry FAILED" in d.explanation
    assert d.fix is not None and d.fix.startswith("198.51.100.9 is down or not on r-srv's link")
    assert evidence_json((hop,))["next_hop"] == {
        "via": "198.51.100.9",
        "dev": "r-srv",
        "gateway": True,
        "state": "FAILED",
        "lladdr": None,
        "on_link": True,
    }


def test_a_full_arp_queue_says_how_much_may_wait() -> None:
    hop = NextHop("198.51.100.9", "r-srv", True, "INCOMPLETE", None, True, None, 212992)
    d = diagnose.diagnose(drop(), facts("NEIGH_QUEUEFULL", hop, iface="r-srv"))
    assert "too many packets queued waiting for ARP/ND" in d.explanation
    assert "unres_qlen_bytes=212992" in d.explanation


def test_a_cilium_tc_program_that_drops_is_named_as_ciliums_policy() -> None:
    prog = TcProgram("tcx", "bpf", "cil_from_container", 812, "a1b2c3d4e5f60708")
    f = facts("TC_INGRESS", TcFilters("lxc12ab", "ingress", (prog,)), iface="lxc12ab")
    d = diagnose.diagnose(drop(), f)
    assert d.category is Category.TC
    assert "BPF program cil_from_container (id 812, tag a1b2c3d4e5f60708, tcx; Cilium's)" in (
        d.explanation
    )
    assert d.fix is not None and d.fix.startswith("it is Cilium's policy")


def test_a_tc_drop_with_nothing_attached_any_more_says_so() -> None:
    d = diagnose.diagnose(drop(), facts("TC_EGRESS", TcFilters("eth0", "egress", ())))
    assert d.category is Category.TC and "nothing is attached there any more" in d.explanation


def test_a_full_qdisc_names_its_kind_limit_backlog_and_the_change_to_make() -> None:
    q = Qdisc("fq_codel", "0:", "root", 10240, "packets", 10240, 3000000, 57, 0)
    d = diagnose.diagnose(drop(), facts("QDISC_DROP", QdiscStats("eth0", (q,)), iface="eth0"))
    assert d.category is Category.QDISC
    assert "fq_codel qdisc 0: (root) on eth0 in netns node, limit 10240 packets" in d.explanation
    assert d.fix is not None and "tc qdisc change dev eth0 root handle 0: fq_codel limit N" in d.fix


def test_a_queue_drop_on_a_veth_whose_peer_is_down_is_link_down_not_qdisc() -> None:
    here = dev("r-srv", carrier=False, operstate="LOWERLAYERDOWN")
    peer = dev("eth0", up=False, carrier=False, operstate="DOWN")
    state = LinkState(here, peer, "server")
    q = Qdisc("noqueue", "0:", "root", None, None, 0, 0, 0, 0)
    f = facts("QDISC_DROP", state, QdiscStats("r-srv", (q,)), iface="r-srv")
    d = diagnose.diagnose(drop(), f)
    assert d.category is Category.LINK_DOWN
    assert "its veth peer eth0 in netns server is down (DOWN)" in d.explanation
    assert d.fix == (
        "ip link set eth0 up in netns server, or find why it went down (the pod or container on"
        " that end stopped?)"
    )
    assert evidence_json((state,))["link"]["peer"] == {  # type: ignore[index]
        "dev": "eth0",
        "netns": "server",
        "up": False,
        "carrier": False,
        "operstate": "DOWN",
    }


def test_doctor_flags_a_device_that_is_up_with_no_carrier() -> None:
    gone = dev("veth9", carrier=False, operstate="LOWERLAYERDOWN")
    f = NamespaceFacts("node", {}, ["eth0"], [], False, {}, links=[gone, dev("eth0")])
    (finding,) = link.doctor(f)
    assert finding.level is Level.WARN and finding.what.startswith("veth9 in netns node up but")


def test_an_iface_taken_from_the_route_says_so_in_the_evidence() -> None:
    assert evidence_json((IfaceFromRoute("eth0"),)) == {"iface_from": "route"}


def v6drop(dst: str = "2001:db8:2::2") -> Drop:
    return Drop(0, 0, 0, 1, 2, 57, 0, 0x86DD, 17, IPv6Address("2001:db8:1::2"),
                IPv6Address(dst), 4000, 7777, None, None, 1)  # fmt: skip


def test_ipv6_forwarding_off_is_the_ipv6_all_switch_not_the_ipv4_sysctls() -> None:
    fwd = Forwarding("r-cli", None, 0, 0, "ipv6", 0)
    route = unicast("2001:db8:2::2", "r-srv")
    f = facts("IP_INADDRERRORS", fwd, Routing(route, route), iface="r-cli", location="ip6_forward")
    d = diagnose.diagnose(v6drop(), f)
    assert d.category is Category.FORWARDING_DISABLED
    assert "IPv6 forwarding is disabled in netns node (net.ipv6.conf.all.forwarding=0," in (
        d.explanation
    )
    assert d.fix is not None and d.fix.startswith(forwarding.IPV6_FORWARD_ON)
    assert "net.ipv6.conf.r-cli.force_forwarding=1" in d.fix
    assert evidence_json((fwd,))["forwarding"] == {
        "family": "ipv6",
        "all": 0,
        "r-cli": 0,
        "force_forwarding": 0,
    }


def test_ipv6_force_forwarding_on_one_interface_is_not_forwarding_disabled() -> None:
    assert not Forwarding("r-cli", None, 0, 0, "ipv6", 1).disabled


def test_no_ipv6_route_is_no_route_whatever_ipv6_forwarding_says() -> None:
    missing = RouteLookup("2001:db8:9::2", "none", error="Network is unreachable")
    fwd = Forwarding("r-cli", None, 0, 0, "ipv6", 0)
    f = facts("IP_INNOROUTES", fwd, Routing(missing, missing), location="ip6_pkt_discard")
    d = diagnose.diagnose(v6drop("2001:db8:9::2"), f)
    assert d.category is Category.NO_ROUTE
    assert d.fix is not None and "ip -6 route add" in d.fix


def test_doctor_flags_ipv6_forwarding_off_on_a_dual_stack_router() -> None:
    f = NamespaceFacts(
        "node",
        {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 0},
        ["eth0", "eth1"],
        [],
        False,
        {},
        interfaces6=["eth0", "eth1"],
    )
    (finding,) = forwarding.doctor(f)
    assert finding.level is Level.FAIL and "IPv6 forwarding off in netns node" in finding.what
    assert finding.fix == f"{forwarding.IPV6_FORWARD_ON} in netns node"


def test_a_bad_checksum_on_a_vxlan_device_names_the_offload_bug() -> None:
    c = ChecksumFacts("flannel.1", "vxlan", {"rx-checksum": True}, csum_errors={"udp": 40})
    d = diagnose.diagnose(drop(), facts("UDP_CSUM", c, iface="flannel.1"))
    assert d.category is Category.CHECKSUM
    assert "InCsumErrors (udp) is 40" in d.explanation and "calico#3145" in d.explanation
    assert d.fix is not None and "ethtool -K flannel.1 tx-checksum-ip-generic off" in d.fix


def test_a_bad_checksum_from_a_veth_says_it_was_wrong_when_sent() -> None:
    c = ChecksumFacts("eth0", "veth", {}, "vethab", "host", {"tx-checksum-ip-generic": True})
    d = diagnose.diagnose(drop(), facts("TCP_CSUM", c, iface="eth0"))
    assert d.category is Category.CHECKSUM
    assert "sent on vethab in netns host (tx checksum offload on there)" in d.explanation
    assert d.fix is not None and d.fix.startswith("the receiver cannot repair it")


def test_a_retransmission_of_data_already_received_is_tcp_working_and_benign() -> None:
    d = diagnose.diagnose(drop(), facts("TCP_OLD_DATA", location="tcp_validate_incoming"))
    assert (d.category, d.benign, d.fix) == (Category.TCP, True, None)
    assert "the protocol working" in d.explanation


def test_a_zero_window_is_tcp_but_not_benign_and_says_the_reader_is_slow() -> None:
    d = diagnose.diagnose(drop(), facts("TCP_ZEROWINDOW", location="tcp_data_queue"))
    assert (d.category, d.benign) == (Category.TCP, False)
    assert d.fix is not None and "reads too slowly" in d.fix


def test_an_unnamed_tcp_drop_with_the_accept_queue_overflowing_is_not_hidden() -> None:
    full = TcpCounters({"ListenOverflows": 9, "ListenDrops": 9}, {"ListenOverflows": 3}, 4096)
    d = diagnose.diagnose(drop(), facts("NOT_SPECIFIED", full, location="tcp_v4_rcv"))
    assert (d.category, d.benign) == (Category.TCP, False)
    assert "accept queue of the listener on 198.18.0.5:40000 is full" in d.explanation
    assert "ListenOverflows +3, net.core.somaxconn=4096" in d.explanation
    calm = TcpCounters({"ListenOverflows": 9, "ListenDrops": 9}, {}, 4096)
    d = diagnose.diagnose(drop(), facts("NOT_SPECIFIED", calm, location="tcp_v4_rcv"))
    assert (d.category, d.benign) == (Category.TCP, True)


def test_a_local_source_from_outside_is_a_martian_with_accept_local() -> None:
    route = RouteLookup("192.0.2.1", "local", oif="lo", table=255)
    m = Martian("source", "192.0.2.1", "local", route, accept_local=0, route_localnet=0)
    f = facts("IP_LOCAL_SOURCE", m, iface="r-cli", location="ip_rcv_finish_core")
    d = diagnose.diagnose(drop("192.0.2.1", "198.51.100.2"), f)
    assert d.category is Category.MARTIAN
    assert "source 192.0.2.1 (local)" in d.explanation and "accept_local=0" in d.explanation
    assert d.fix is not None and "net.ipv4.conf.r-cli.accept_local=1 in netns node" in d.fix


def test_an_older_kernels_unnamed_drop_of_a_loopback_destination_is_a_martian() -> None:
    m = Martian("destination", "127.0.0.1", "loopback", None, 0, 0)
    f = facts("NOT_SPECIFIED", m, iface="eth0", location="ip_rcv_finish_core")
    d = diagnose.diagnose(drop("192.0.2.2", "127.0.0.1"), f)
    assert d.category is Category.MARTIAN
    assert d.fix is not None and "route_localnet=1" in d.fix
    assert martian.kind_of(IPv4Address("0.0.0.0")) == "zero"
    assert martian.kind_of(IPv4Address("198.51.100.7")) is None


def test_the_evidence_cache_stays_bounded_however_many_flows_a_session_sees() -> None:
    from tracer.diagnose.base import Read
    from tracer.enrich.evidence import MAX_ENTRIES, EvidenceCache

    cache = EvidenceCache()
    for flow in range(3 * MAX_ENTRIES):
        record = Forwarding("eth0", 1, 1, flow % 2)
        assert cache.cached(Read(("flow", flow), lambda r=record: (r,))) == (record,)
        assert len(cache._cache) <= MAX_ENTRIES
