"""The kernel matrix: one drop of each kind, diagnosed with the category a user should see.

`make test-kernels` runs this file inside each kernel of the matrix (scripts/test-kernels.sh);
it runs on the host kernel with the rest of the suite too. No test here filters by reason:
kernels before 5.17 have none, and their category must come from droptrace's own hooks.
With DROPTRACE_MATRIX_OUT set, each case appends what it saw there, for the matrix table.
A case droptrace is known to get wrong keeps its expectation and is marked xfail (strict:
once droptrace is fixed the marker must go); the table shows it as known-wrong.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    Droptrace,
    MakeNetns,
    Result,
    loaded_droptrace_programs,
    patience,
    routed_udp_topology,
    router_pair,
    send_udp,
    sh,
    spoofing_pair,
)
from tracer.recorder import PIN_DIR

pytestmark = pytest.mark.root

# DROPTRACE_MATRIX_IMPOSSIBLE=CASE: that case expects a category no drop has, so the
# harness's report of a case failing inside a guest can be checked (scripts/kernel-guest.sh).
IMPOSSIBLE = os.environ.get("DROPTRACE_MATRIX_IMPOSSIBLE")


def _release() -> tuple[int, int]:
    major, minor = re.findall(r"\d+", os.uname().release)[:2]
    return int(major), int(minor)


# kfree_skb gives drop reasons from 5.17 on; before, the category rests on droptrace's hooks
# and on where the packet was freed.
NO_REASONS = _release() < (5, 17)


def watch(
    ns: str, send: Callable[[], None], port: int, env: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Drops in namespace ns of traffic to `port` while send() runs, and droptrace's stderr.

    Ends as soon as droptrace has shown one such drop (--duration only bounds it)."""
    limit = patience(60)
    with Droptrace("--json", "--netns", ns, "--duration", str(int(limit)), env=env) as dt:
        send()
        dt.wait_for_event(lambda e: e.get("dport") == port, timeout=patience(30))
        dt.interrupt()
        res = dt.wait(timeout=patience(30))
    assert res.rc == 0, res.stderr
    # The drops of that port; counter lines ({"type": "counter"}) are not drops.
    return [e for e in res.events if e.get("dport") == port], res.stderr


def hooks_of(stderr: str) -> str:
    return next((ln.split("tracing with ", 1)[1] for ln in stderr.splitlines()
                 if "tracing with " in ln), "")  # fmt: skip


def record(
    case: str, expected: str, drops: list[dict[str, Any]], stderr: str, hooks: str | None = None
) -> None:
    out = os.environ.get("DROPTRACE_MATRIX_OUT")
    if not out:
        return
    first = drops[0] if drops else {}
    row = {
        "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0],
        "kernel": os.uname().release,
        "case": case,
        "expected": expected,
        "seen": first.get("category", "none"),
        "reason": first.get("reason"),
        "location": first.get("location"),
        "rule": (first.get("rule") or {}).get("text"),
        "inferred": bool((first.get("evidence") or {}).get("reason_inferred")),
        "cause": (first.get("evidence") or {}).get("cause"),
        "hooks": hooks if hooks is not None else hooks_of(stderr),
    }
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def check(
    case: str, expected: str, drops: list[dict[str, Any]], stderr: str, hooks: str | None = None
) -> dict[str, Any]:
    if case == IMPOSSIBLE:
        expected = "impossible"
    record(case, expected, drops, stderr, hooks)
    assert drops, f"no drop seen: {stderr}"
    assert drops[0]["category"] == expected, drops[0]
    return drops[0]


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """One droptrace command to its end (record, dump, stop), given the time it needs."""
    p = subprocess.run(
        [sys.executable, "-m", "tracer", *args],
        capture_output=True,
        text=True,
        timeout=patience(60),
        env=dict(os.environ, **(env or {})),
    )
    return Result(p.returncode, [], p.stderr, p.stdout)


def test_udp_to_a_closed_port_is_no_socket(netns: MakeNetns) -> None:
    ns = netns("m-udp")
    drops, err = watch(ns, lambda: send_udp(ns, "127.0.0.1", 9, n=2), 9)
    check("udp_closed_port", "no_socket", drops, err)


def test_strict_rp_filter_drop_is_rp_filter(netns: MakeNetns) -> None:
    client, router = spoofing_pair(netns)
    sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", ns=router)
    sh("sysctl", "-qw", "net.ipv4.conf.r-cli.rp_filter=1", ns=router)
    drops, err = watch(
        router, lambda: send_udp(client, "192.0.2.1", 7000, n=2, src="198.51.100.77"), 7000
    )
    ev = check("rp_filter_strict", "rp_filter", drops, err)
    assert ev["evidence"]["rp_filter"]["effective"] == 1, ev
    if ev["evidence"].get("reason_inferred"):  # no reasons: only the cause hook can tell
        assert "-EXDEV" in ev["evidence"]["cause"], ev


@pytest.mark.parametrize("iptables", ["iptables-nft", "iptables-legacy"])
def test_iptables_drop_in_forward_is_netfilter_with_its_rule(
    netns: MakeNetns, iptables: str
) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh(iptables, "-A", "FORWARD", "-p", "udp", "--dport", "5353", "-m", "comment",
       "--comment", "matrix", "-j", "DROP", ns=router)  # fmt: skip
    drops, err = watch(router, lambda: send_udp(client, "198.51.100.2", 5353, n=2), 5353)
    ev = check(f"{iptables}_drop", "netfilter", drops, err)
    rule = ev["rule"]
    assert rule and rule["chain"] == "FORWARD" and rule["comment"] == "matrix", ev
    if ev["evidence"].get("reason_inferred") and "nf_hook_slow" in err:
        assert ev["evidence"]["netfilter"] == {"hook": "FORWARD", "family": "ipv4"}, ev


def test_forwarding_off_is_forwarding_disabled(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=0", ns=router)
    drops, err = watch(router, lambda: send_udp(client, "198.51.100.2", 4001, n=2), 4001)
    check("forwarding_off", "forwarding_disabled", drops, err)


def test_forwarded_packet_without_a_route_is_no_route(netns: MakeNetns) -> None:
    client, router = router_pair(netns)
    drops, err = watch(router, lambda: send_udp(client, "203.0.113.9", 4000, n=2), 4000)
    check("no_route", "no_route", drops, err)


def test_recorder_keeps_drops_nobody_watched_and_stop_leaves_nothing(
    netns: MakeNetns, tmp_path: Path
) -> None:
    """`record` -> drops -> `dump --json` shows them, `dump --pcap` has their packets ->
    `stop`: nothing pinned or loaded.

    A netfilter drop, so on kernels without reasons the recorded event is the one the
    nf_hook_slow hook completed, with the packet bytes taken when it was parked."""
    client, router, _ = routed_udp_topology(netns)
    sh("iptables-nft", "-A", "FORWARD", "-p", "udp", "--dport", "5354", "-j", "DROP", ns=router)
    try:
        started = cli("record", "--netns", router)
        assert started.rc == 0, started.stderr
        send_udp(client, "198.51.100.2", 5354, n=3)
        dumped = cli("dump", "--json")
        assert dumped.rc == 0, dumped.stderr
        doc = json.loads(dumped.stdout)
        drops = [d for d in doc["drops"] if d["dport"] == 5354]
        hooks = re.search(r"recording with (.*), \d+ drops kept", started.stderr)
        check("recorder", "netfilter", drops, started.stderr, hooks[1] if hooks else "")
        assert len(drops) == 3, doc["drops"]
        # Exact: every drop it counted in the namespace is kept (the namespace's own stray
        # drops too, e.g. a QUEUE_PURGE when a socket closes: they are not the test's).
        assert doc["totals"]["matched"] == len(doc["drops"]), (doc["totals"], doc["drops"])
        pcap = tmp_path / "rec.pcapng"
        dumped = cli("dump", "--pcap", str(pcap))
        assert dumped.rc == 0 and "wrote 3 packets" in dumped.stderr, dumped.stderr
        assert [udp_destination(p) for p in packets(pcap)] == [("198.51.100.2", 5354)] * 3
    finally:
        stopped = cli("stop")
    assert stopped.rc == 0 and "flight recorder stopped" in stopped.stdout, stopped.stderr
    assert not PIN_DIR.exists()
    assert loaded_droptrace_programs(settle=patience(5)) == []


def test_first_packet_dropped_after_dnat_says_where_it_was_sent(netns: MakeNetns) -> None:
    """The conntrack entry the dropped skb carries gives the service address: its types are
    in the BTF of every kernel of the matrix (5.10's vmlinux has them though nf_conntrack is
    a module there; 6.1's module has its own)."""
    client, router, _ = routed_udp_topology(netns)
    sh("iptables-nft", "-t", "nat", "-A", "PREROUTING", "-d", "198.19.0.10/32", "-p", "udp",
       "--dport", "53", "-j", "DNAT", "--to-destination", "198.51.100.2:5355",
       ns=router)  # fmt: skip
    sh("iptables-nft", "-A", "FORWARD", "-p", "udp", "--dport", "5355", "-j", "DROP", ns=router)
    drops, err = watch(router, lambda: send_udp(client, "198.19.0.10", 53, n=2), 5355)
    ev = check("dnat_first_packet", "netfilter", drops, err)
    assert ev["dst"] == "198.51.100.2", ev
    assert ev["evidence"].get("dnat_from") == "198.19.0.10:53", ev
    assert "; sent to 198.19.0.10:53, DNAT'd to 198.51.100.2:5355" in ev["explanation"], ev


def packets(path: Path) -> list[bytes]:
    """The packets of a pcapng file, read with python-pcapng (tshark starts slowly in an
    emulated guest; tests/test_pcap.py reads these files with tshark on the host)."""
    from pcapng import FileScanner, blocks

    with open(path, "rb") as f:
        return [b.packet_data for b in FileScanner(f) if isinstance(b, blocks.EnhancedPacket)]


def udp_destination(ip_packet: bytes) -> tuple[str, int]:
    """An IPv4 UDP packet's destination address and port (from its header bytes)."""
    assert ip_packet[0] >> 4 == 4 and ip_packet[9] == 17, ip_packet.hex()
    ihl = (ip_packet[0] & 0x0F) * 4
    return socket.inet_ntoa(ip_packet[16:20]), int.from_bytes(ip_packet[ihl + 2 : ihl + 4], "big")


def test_nf_hook_slow_kprobe_fallback_names_the_netfilter_hook(netns: MakeNetns) -> None:
    """DROPTRACE_CAUSE_HOOKS=kprobe: the kprobe+kretprobe pair where fexit would be used.

    It loads where kfree_skb has reasons too (forced), and adds the hook and family there."""
    client, router, _ = routed_udp_topology(netns)
    sh("iptables-legacy", "-A", "FORWARD", "-p", "udp", "--dport", "5355", "-j", "DROP", ns=router)
    forced = {"DROPTRACE_CAUSE_HOOKS": "kprobe"}
    drops, err = watch(router, lambda: send_udp(client, "198.51.100.2", 5355, n=2), 5355, forced)
    if "kretprobe/nf_hook_slow" not in hooks_of(err):
        record("nf_kprobe_fallback", "netfilter", [], err)
        pytest.skip(f"the kprobe pair did not attach here: tracing with {hooks_of(err)}")
    ev = check("nf_kprobe_fallback", "netfilter", drops, err)
    assert ev["evidence"]["netfilter"] == {"hook": "FORWARD", "family": "ipv4"}, ev
    if ev["evidence"].get("reason_inferred"):
        assert "nf_hook_slow" in ev["evidence"]["cause"], ev


# IPv6: a dual-stack router (IPv4 forwarding on too, as on a Kubernetes node).


def v6_link(a: str, b: str, a_if: str, b_if: str, a_addr: str, b_addr: str) -> None:
    sh("ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b)
    for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
        sh("ip", "-6", "addr", "add", addr, "dev", ifname, "nodad", ns=ns)
        sh("ip", "link", "set", ifname, "up", ns=ns)


def v6_topology(netns: MakeNetns) -> tuple[str, str, str]:
    """client 2001:db8:1::2 --- router --- server 2001:db8:2::2, both routing via the router."""
    made = [netns("c6"), netns("r6"), netns("s6")]
    for ns in made:  # the fixture turns IPv6 off; no DAD, so addresses work at once
        for knob in ("disable_ipv6=0", "accept_dad=0"):
            for scope in ("all", "default"):
                sh("sysctl", "-qw", f"net.ipv6.conf.{scope}.{knob}", ns=ns)
    client, router, server = made
    v6_link(client, router, "eth0", "r-cli", "2001:db8:1::2/64", "2001:db8:1::1/64")
    v6_link(router, server, "r-srv", "eth0", "2001:db8:2::1/64", "2001:db8:2::2/64")
    sh("ip", "-6", "route", "add", "default", "via", "2001:db8:1::1", ns=client)
    sh("ip", "-6", "route", "add", "default", "via", "2001:db8:2::1", ns=server)
    sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=router)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=router)
    return client, router, server


@pytest.mark.parametrize("ip6tables", ["ip6tables-nft", "ip6tables-legacy"])
def test_ip6tables_drop_in_forward_is_netfilter_with_its_rule(
    netns: MakeNetns, ip6tables: str
) -> None:
    client, router, _ = v6_topology(netns)
    sh(ip6tables, "-A", "FORWARD", "-p", "udp", "--dport", "5353", "-m", "comment",
       "--comment", "matrix6", "-j", "DROP", ns=router)  # fmt: skip
    drops, err = watch(router, lambda: send_udp(client, "2001:db8:2::2", 5353, n=2), 5353)
    ev = check(f"{ip6tables}_drop", "netfilter", drops, err)
    if ev["evidence"].get("reason_inferred") and "nf_hook_slow" in err:
        assert ev["evidence"]["netfilter"] == {"hook": "FORWARD", "family": "ipv6"}, ev
    rule = ev["rule"]
    assert rule and rule["chain"] == "FORWARD" and rule["comment"] == "matrix6", ev


@pytest.mark.xfail(
    NO_REASONS,
    strict=True,
    reason="without drop reasons a drop is taken for a routing one only where ip_error frees"
    " it (ROUTING_LOCATIONS in tracer/diagnose/base.py); IPv6 no route frees at ip6_pkt_drop,"
    " so it stays 'other'",
)
def test_ipv6_forwarded_packet_without_a_route_is_no_route(netns: MakeNetns) -> None:
    client, router, _ = v6_topology(netns)
    drops, err = watch(router, lambda: send_udp(client, "2001:db8:99::9", 4000, n=2), 4000)
    check("ipv6_no_route", "no_route", drops, err)


@pytest.mark.xfail(
    NO_REASONS,
    strict=True,
    reason="without drop reasons a drop is taken for a routing one only where ip_error frees"
    " it (ROUTING_LOCATIONS in tracer/diagnose/base.py); IPv6 forwarding refused frees at"
    " ip6_forward, so it stays 'other'",
)
def test_ipv6_forwarding_off_is_forwarding_disabled(netns: MakeNetns) -> None:
    client, router, _ = v6_topology(netns)
    sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=0", ns=router)
    drops, err = watch(router, lambda: send_udp(client, "2001:db8:2::2", 4001, n=2), 4001)
    ev = check("ipv6_forwarding_off", "forwarding_disabled", drops, err)
    assert "net.ipv6.conf" in ev["fix"], ev
