"""The kernel matrix: one drop of each kind, diagnosed with the category a user should see.

`make test-kernels` runs this file inside each kernel of the matrix (scripts/test-kernels.sh);
it runs on the host kernel with the rest of the suite too. No test here filters by reason:
kernels before 5.17 have none, and their category must come from droptrace's own hooks.
With DROPTRACE_MATRIX_OUT set, each case appends what it saw there, for the matrix table.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.helpers import (
    SLOW,
    Droptrace,
    MakeNetns,
    routed_udp_topology,
    router_pair,
    send_udp,
    sh,
    spoofing_pair,
)

pytestmark = pytest.mark.root


def watch(ns: str, send: Any, port: int) -> tuple[list[dict[str, Any]], str]:
    """Drops in namespace ns of UDP to `port` while send() runs, and droptrace's stderr."""
    with Droptrace("--json", "--netns", ns, "--duration", str(4 * SLOW)) as dt:
        send()
        res = dt.wait(timeout=60 * SLOW)
    assert res.rc == 0, res.stderr
    return [e for e in res.events if e["dport"] == port], res.stderr


def record(case: str, expected: str, drops: list[dict[str, Any]], stderr: str) -> None:
    out = os.environ.get("DROPTRACE_MATRIX_OUT")
    if not out:
        return
    first = drops[0] if drops else {}
    hooks = next((ln.split("tracing with ", 1)[1] for ln in stderr.splitlines()
                  if "tracing with " in ln), "")  # fmt: skip
    row = {
        "kernel": os.uname().release,
        "case": case,
        "expected": expected,
        "seen": first.get("category", "none"),
        "reason": first.get("reason"),
        "location": first.get("location"),
        "rule": (first.get("rule") or {}).get("text"),
        "inferred": bool((first.get("evidence") or {}).get("reason_inferred")),
        "cause": (first.get("evidence") or {}).get("cause"),
        "hooks": hooks,
    }
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def check(case: str, expected: str, drops: list[dict[str, Any]], stderr: str) -> dict[str, Any]:
    record(case, expected, drops, stderr)
    assert drops, f"no drop seen: {stderr}"
    assert drops[0]["category"] == expected, drops[0]
    return drops[0]


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
