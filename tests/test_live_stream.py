"""The foundation: real drops in real namespaces, seen live with reason, place and flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import (
    Droptrace,
    MakeNetns,
    loaded_droptrace_programs,
    routed_udp_topology,
    router_pair,
    send_udp,
    sh,
    spoofing_pair,
)

pytestmark = pytest.mark.root


def test_udp_to_closed_port_is_no_socket_on_lo_in_that_netns_only(netns: MakeNetns) -> None:
    watched, other = netns("watched"), netns("other")
    with Droptrace("--json", "--netns", watched, "--duration", "4") as dt:
        send_udp(watched, "127.0.0.1", 9, n=3)
        send_udp(other, "127.0.0.1", 9, n=3)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    assert len(res.events) == 3, res.events
    for ev in res.events:
        assert ev["reason"] == "NO_SOCKET"
        assert ev["category"] == "no_socket"
        assert ev["iface"] == "lo"
        assert ev["netns"] == watched
        assert ev["location"] == "__udp4_lib_rcv"
        assert (ev["proto"], ev["dst"], ev["dport"]) == ("udp", "127.0.0.1", 9)
    assert "NO_SOCKET 3" in res.stderr  # exact in-kernel total in the summary


# 2: compared directly in the kernel; 5: more than DT_NETNS_FAST, looked up in a map.
@pytest.mark.parametrize("n", [2, 5])
def test_repeated_netns_watches_each_of_them_and_no_other(netns: MakeNetns, n: int) -> None:
    watched, other = [netns(f"many{i}") for i in range(n)], netns("notwatched")
    args = [a for ns in watched for a in ("--netns", ns)]
    with Droptrace("--json", *args, "--duration", "4") as dt:
        for ns in watched:
            send_udp(ns, "127.0.0.1", 9, n=1)
        send_udp(other, "127.0.0.1", 9, n=2)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    assert sorted(e["netns"] for e in res.events) == sorted(watched), res.events


@pytest.mark.parametrize(
    ("iptables", "location"), [("iptables", "nft_do_chain"), ("iptables-legacy", "nf_hook_slow")]
)
def test_iptables_drop_in_forward_is_netfilter_drop(
    netns: MakeNetns, iptables: str, location: str
) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh(iptables, "-A", "FORWARD", "-p", "udp", "--dport", "5353", "-j", "DROP", ns=router)
    with Droptrace("--json", "--netns", router, "--duration", "4") as dt:
        send_udp(client, "198.51.100.2", 5353, n=2)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    drops = [e for e in res.events if e["dport"] == 5353]
    assert len(drops) == 2, res.events
    for ev in drops:
        assert (ev["reason"], ev["category"]) == ("NETFILTER_DROP", "netfilter")
        assert ev["location"] == location
        assert ev["iface"] == "r-cli"  # the interface it came in on
        assert (ev["src"], ev["dst"]) == ("192.0.2.2", "198.51.100.2")


def test_forwarded_packet_without_route_is_no_route_at_ip_error(netns: MakeNetns) -> None:
    client, router = router_pair(netns)
    with Droptrace("--json", "--netns", router, "--duration", "4") as dt:
        send_udp(client, "203.0.113.9", 4000, n=2)
        res = dt.wait()
    drops = [e for e in res.events if e["dst"] == "203.0.113.9"]
    assert len(drops) == 2, res.events
    for ev in drops:
        assert (ev["reason"], ev["category"]) == ("IP_INNOROUTES", "no_route")
        assert (ev["location"], ev["iface"], ev["netns"]) == ("ip_error", "r-cli", router)


def test_strict_rp_filter_drops_source_routed_via_another_interface(netns: MakeNetns) -> None:
    client, router = spoofing_pair(netns)
    sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", ns=router)
    sh("sysctl", "-qw", "net.ipv4.conf.r-cli.rp_filter=1", ns=router)
    with Droptrace("--json", "--netns", router, "--reason", "IP_RPFILTER", "--duration", "4") as dt:
        send_udp(client, "192.0.2.1", 7000, n=2, src="198.51.100.77")
        res = dt.wait()
    assert len(res.events) == 2, res.events
    for ev in res.events:
        assert (ev["reason"], ev["category"]) == ("IP_RPFILTER", "rp_filter")
        assert (ev["iface"], ev["netns"], ev["src"]) == ("r-cli", router, "198.51.100.77")


def test_ip_filter_keeps_only_matching_addresses(netns: MakeNetns) -> None:
    ns = netns("ipf")
    sh("ip", "addr", "add", "192.0.2.10/32", "dev", "lo", ns=ns)
    with Droptrace("--json", "--netns", ns, "--ip", "192.0.2.10", "--duration", "4") as dt:
        send_udp(ns, "127.0.0.1", 9, n=2)
        send_udp(ns, "192.0.2.10", 9, n=2)
        res = dt.wait()
    assert [e["dst"] for e in res.events] == ["192.0.2.10", "192.0.2.10"], res.events


# 2 networks: compared directly in the kernel; 5: more than DT_NET_FAST, in the LPM map.
@pytest.mark.parametrize("unrelated", [0, 3])
def test_ip_filter_matches_networks_of_either_family(netns: MakeNetns, unrelated: int) -> None:
    ns = netns("ipnets")
    sh("sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0", ns=ns)
    for addr in ("192.0.2.10/32", "192.0.2.20/32", "2001:db8::10/128", "2001:db8:1::10/128"):
        sh("ip", "addr", "add", addr, "dev", "lo", ns=ns)
    nets = ["192.0.2.16/28", "2001:db8::/64", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15"]
    args = [a for net in nets[: 2 + unrelated] for a in ("--ip", net)]
    with Droptrace("--json", "--netns", ns, *args, "--duration", "4") as dt:
        for dst in ("192.0.2.10", "192.0.2.20", "2001:db8::10", "2001:db8:1::10", "127.0.0.1"):
            send_udp(ns, dst, 9, n=1)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    seen = sorted(e["dst"] for e in res.events if e["proto"] == "udp")
    assert seen == ["192.0.2.20", "2001:db8::10"], res.events


def test_count_stops_after_n_drops(netns: MakeNetns) -> None:
    ns = netns("cnt")
    with Droptrace("--json", "--netns", ns, "--count", "2", "--duration", "30") as dt:
        send_udp(ns, "127.0.0.1", 9, n=5)
        res = dt.wait(timeout=20)
    assert res.rc == 0, res.stderr
    assert len(res.events) == 2


def test_duration_and_ctrl_c_end_cleanly_with_a_summary(netns: MakeNetns) -> None:
    ns = netns("end")
    started = time.monotonic()
    with Droptrace("--json", "--netns", ns, "--duration", "1") as dt:
        res = dt.wait(timeout=20)
    assert res.rc == 0 and time.monotonic() - started < 15
    assert "0 lost events" in res.stderr
    with Droptrace("--netns", ns) as dt:
        send_udp(ns, "127.0.0.1", 9, n=1)
        time.sleep(0.5)
        dt.interrupt()
        res = dt.wait(timeout=20)
    assert res.rc == 0, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert "NO_SOCKET" in res.stdout and "events lost" in res.stdout


def test_sigint_ends_it_also_when_started_with_sigint_ignored(netns: MakeNetns) -> None:
    """As a shell's background job (`droptrace ... &` in a script) starts: SIGINT ignored."""
    ns = netns("bgint")
    ignoring = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", sys.executable, "-m", "tracer"]
    with Droptrace("--netns", ns, program=ignoring) as dt:
        send_udp(ns, "127.0.0.1", 9, n=1)
        time.sleep(0.5)
        dt.interrupt()
        res = dt.wait(timeout=20)
    assert res.rc == 0, res.stderr
    assert "NO_SOCKET" in res.stdout and "Traceback" not in res.stderr
    assert loaded_droptrace_programs() == []


def test_a_watched_namespace_that_is_deleted_ends_the_trace_in_one_line(
    netns: MakeNetns,
) -> None:
    ns = netns("gone")
    with Droptrace("--json", "--netns", ns) as dt:
        send_udp(ns, "127.0.0.1", 9, n=1)
        time.sleep(0.5)
        sh("ip", "netns", "del", ns)  # its inode may be the next namespace's
        res = dt.wait(timeout=20)
    assert res.rc == 0, res.stderr
    assert f"droptrace: network namespace {ns} is gone; stopping" in res.stderr
    assert [e["reason"] for e in res.events] == ["NO_SOCKET"], res.events
    assert "Traceback" not in res.stderr and loaded_droptrace_programs() == []


def test_a_namespace_given_by_pid_is_traced_after_that_process_ends(netns: MakeNetns) -> None:
    ns = netns("bypid")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "60"])
    try:
        time.sleep(0.3)  # `ip netns exec` has entered the namespace
        path = f"/proc/{proc.pid}/ns/net"
        with Droptrace("--json", "--netns", path, "--duration", "4") as dt:
            proc.kill()
            proc.wait()
            time.sleep(1.5)  # past the namespace watcher's check
            send_udp(ns, "127.0.0.1", 9, n=1)  # the namespace lives on (named)
            res = dt.wait()
    finally:
        proc.kill()
        proc.wait()
    assert res.rc == 0, res.stderr
    assert "is gone" not in res.stderr
    assert [e["reason"] for e in res.events] == ["NO_SOCKET"], res.events


def test_tiny_ring_buffer_loses_events_but_totals_stay_exact(netns: MakeNetns) -> None:
    ns = netns("ring")
    args = ("--json", "--netns", ns, "--ring-size", "4096", "--flow-limit", "0")
    with Droptrace(*args, "--duration", "5") as dt:
        send_udp(ns, "127.0.0.1", 9, n=3000)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    summary = res.stderr.strip().splitlines()[-1]
    assert "NO_SOCKET 3000" in summary, summary
    lost = int(summary.split(" lost events")[0].rsplit(" ", 1)[1])
    assert lost > 0 and lost + len(res.events) == 3000, summary


def test_nothing_is_left_after_sigkill(netns: MakeNetns) -> None:
    ns = netns("kill")
    dt = Droptrace("--json", "--netns", ns)
    with dt:
        dt.kill()
    assert loaded_droptrace_programs() == []


@pytest.mark.parametrize("hook", ["raw_tp/kfree_skb", "tracepoint/skb/kfree_skb"])
def test_fallback_hooks_see_the_same_drop(netns: MakeNetns, hook: str) -> None:
    # What a kernel without tp_btf (or without raw_tp) would run: the same object, degraded.
    ns = netns("fallback")
    env = {"DROPTRACE_KFREE_SKB": hook}
    with Droptrace("--json", "--netns", ns, "--duration", "3", env=env) as dt:
        send_udp(ns, "127.0.0.1", 9, n=2)
        res = dt.wait()
    assert f"tracing with {hook}" in res.stderr
    assert "hook unavailable: tp_btf/kfree_skb: skipped" in res.stderr
    assert [(e["reason"], e["iface"], e["dport"]) for e in res.events] == [
        ("NO_SOCKET", "lo", 9)
    ] * 2


def _nft_drop_rule(router: str, port: int) -> None:
    sh("nft", "add table ip dtcount", ns=router)
    sh("nft", "add chain ip dtcount storm { type filter hook forward priority 0 ; }", ns=router)
    sh("nft", f"add rule ip dtcount storm udp dport {port} counter drop", ns=router)


def _nft_dropped(router: str) -> int:
    out = sh("nft", "-j", "list", "table", "ip", "dtcount", ns=router).stdout
    for item in json.loads(out)["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                return int(expr["counter"]["packets"])
    raise AssertionError(out)


def test_forwarded_burst_totals_equal_the_kernels_rule_counter(
    netns: MakeNetns, tmp_path: Path
) -> None:
    client, router, _ = routed_udp_topology(netns)
    _nft_drop_rule(router, 6000)
    summary = tmp_path / "summary.json"
    args = ("--json", "--netns", router, "--summary-json", str(summary), "--duration", "5")
    with Droptrace(*args) as dt:
        send_udp(client, "198.51.100.2", 6000, n=2500)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    kernel = _nft_dropped(router)
    assert kernel == 2500
    counted = json.loads(summary.read_text())
    assert counted["totals"] == {"NETFILTER_DROP": kernel}, counted
    # Every counted drop was shown, held back by the rate limit, or lost, and said so.
    assert counted["shown"] + counted["suppressed"] + counted["lost"] == kernel, counted
    assert f"NETFILTER_DROP {kernel}" in res.stderr


def test_rate_limit_thins_a_storm_of_one_flow_but_counters_stay_exact(netns: MakeNetns) -> None:
    ns = netns("flow")
    with Droptrace("--json", "--netns", ns, "--flow-limit", "5", "--duration", "4") as dt:
        send_udp(ns, "127.0.0.1", 9, n=2000)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    summary = res.stderr.strip().splitlines()[-1]
    assert "NO_SOCKET 2000" in summary, summary
    suppressed = int(summary.split(" suppressed")[0].rsplit(" ", 1)[1])
    assert 1 <= len(res.events) <= 5 * 2 * (os.cpu_count() or 1), len(res.events)
    assert len(res.events) + suppressed == 2000, summary
    # The events say how many identical drops they stand for; what is not yet said is
    # still in the summary.
    assert sum(e["suppressed"] for e in res.events) <= suppressed


def test_filter_that_matches_nothing_streams_nothing(netns: MakeNetns) -> None:
    busy, idle = netns("busy"), netns("idle")
    with Droptrace("--json", "--netns", idle, "--duration", "3") as dt:
        send_udp(busy, "127.0.0.1", 9, n=500)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    assert res.events == []
    assert "droptrace: 0 drops" in res.stderr and "0 lost events" in res.stderr
