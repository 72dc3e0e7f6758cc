"""nftrace: the exact nf_tables rule from the kernel's own trace, and nothing left behind."""

from __future__ import annotations

import time

import pytest

from tests.helpers import Droptrace, MakeNetns, routed_udp_topology, send_udp, sh

pytestmark = pytest.mark.root


def trace_tables(ns: str) -> list[str]:
    out = sh("nft", "list", "tables", ns=ns).stdout
    return [line for line in out.splitlines() if "droptrace_" in line]


def traced_drops(router: str, client: str, *args: str) -> list[dict[str, object]]:
    """A first drop (which starts the trace), then more of the same flow, traced."""
    with Droptrace("--json", "--netns", router, "--duration", "5", *args) as dt:
        send_udp(client, "198.51.100.2", 5353, n=1)
        time.sleep(1.5)
        assert trace_tables(router), "no trace table while netfilter drops a flow"
        send_udp(client, "198.51.100.2", 5353, n=3)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    assert trace_tables(router) == [], "trace table left after a normal exit"
    return [e for e in res.events if e["dport"] == 5353]


def test_iptables_nft_reject_is_named_from_the_trace_in_iptables_save_form(
    netns: MakeNetns,
) -> None:
    client, router, _ = routed_udp_topology(netns)
    comment = "default/web has no endpoints"
    sh("iptables", "-N", "KUBE-EXTERNAL-SERVICES", ns=router)
    sh("iptables", "-A", "FORWARD", "-j", "KUBE-EXTERNAL-SERVICES", ns=router)
    sh("iptables", "-A", "KUBE-EXTERNAL-SERVICES", "-p", "udp", "-d", "198.51.100.2",
       "--dport", "5353", "-m", "comment", "--comment", comment,
       "-j", "REJECT", ns=router)  # fmt: skip
    drops = traced_drops(router, client)
    assert len(drops) == 4, drops
    assert drops[0]["evidence"]["rule_from"] == "counters"  # type: ignore[index]
    traced = [e for e in drops if e["evidence"]["rule_from"] == "nftrace"]  # type: ignore[index]
    assert len(traced) == 3, drops
    rule = traced[0]["rule"]
    assert isinstance(rule, dict)
    assert (rule["family"], rule["table"], rule["chain"]) == (
        "ipv4",
        "filter",
        "KUBE-EXTERNAL-SERVICES",
    )
    assert rule["comment"] == comment and isinstance(rule["handle"], int)
    assert rule["text"].startswith("-A KUBE-EXTERNAL-SERVICES") and "-j REJECT" in rule["text"]
    assert traced[0]["category"] == "netfilter"


def test_native_nft_rule_without_counter_is_named_only_by_the_trace(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("nft", "add table inet guard", ns=router)
    sh("nft", "add chain inet guard through { type filter hook forward priority 0; }", ns=router)
    sh("nft", 'add rule inet guard through udp dport 5353 drop comment "no dns"', ns=router)
    handle = int(sh("nft", "-a", "list", "chain", "inet", "guard", "through", ns=router)
                 .stdout.split("# handle ")[-1].split()[0])  # fmt: skip
    drops = traced_drops(router, client)
    traced = [e for e in drops if e["rule"]]
    assert len(traced) == 3, drops
    rule = traced[0]["rule"]
    assert isinstance(rule, dict)
    assert (rule["family"], rule["table"], rule["chain"], rule["handle"]) == (
        "nft inet", "guard", "through", handle,
    )  # fmt: skip
    assert rule["comment"] == "no dns" and "udp dport 5353 drop" in rule["text"]


def test_trace_table_of_a_killed_run_is_removed_by_the_next_start(netns: MakeNetns) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("iptables", "-A", "FORWARD", "-p", "udp", "-j", "DROP", ns=router)
    dt = Droptrace("--json", "--netns", router, "--duration", "30")
    with dt:
        send_udp(client, "198.51.100.2", 5353, n=1)
        deadline = time.monotonic() + 10
        while not trace_tables(router) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert trace_tables(router)
        dt.kill()  # SIGKILL: no chance to clean up
    assert trace_tables(router), "the kill left nothing to clean up: the test proves nothing"
    with Droptrace("--json", "--netns", router, "--duration", "0.5") as again:
        assert again.wait().rc == 0
    assert trace_tables(router) == []
