"""`doctor` flags the seeds' known-bad settings on real namespaces, and only those."""

from __future__ import annotations

import pytest

from tests.helpers import MakeNetns, link, router_pair, run_cli, sh, unique_name
from tracer.lab.runner import lab_namespaces
from tracer.lab.scenarios import SCENARIOS, Scenario

pytestmark = pytest.mark.root


def doctor(ns: str) -> tuple[int, str]:
    res = run_cli("doctor", "--netns", ns)
    assert "Traceback" not in res.stderr
    return res.rc, res.stdout


def two_legged_router(netns: MakeNetns) -> str:
    _, router = router_pair(netns)
    link(router, netns("srv"), "r-srv", "eth0", "198.51.100.1/24", "198.51.100.2/24")
    return router


def test_clean_plain_namespace_exits_0(netns: MakeNetns) -> None:
    ns = netns("clean")
    sh("ip", "addr", "add", "192.0.2.5/32", "dev", "lo", ns=ns)
    rc, out = doctor(ns)
    assert rc == 0, out
    assert "plain host" in out  # forwarding off is right for it


def test_strict_rp_filter_on_a_router_exits_1_with_the_loose_fix(netns: MakeNetns) -> None:
    router = two_legged_router(netns)
    assert doctor(router)[0] == 0
    sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", ns=router)
    rc, out = doctor(router)
    assert rc == 1 and "strict rp_filter on r-cli, r-srv" in out
    assert "sysctl -w net.ipv4.conf.r-cli.rp_filter=2" in out


def test_forwarding_off_on_one_interface_is_named(netns: MakeNetns) -> None:
    router = two_legged_router(netns)
    sh("sysctl", "-qw", "net.ipv4.conf.r-srv.forwarding=0", ns=router)
    rc, out = doctor(router)
    assert rc == 1 and "forwarding off on r-srv" in out


def test_bridge_without_bridge_netfilter_and_a_matchless_drop_rule(netns: MakeNetns) -> None:
    node = netns("node")
    sh("ip", "link", "add", "cni0", "type", "bridge", ns=node)
    sh("ip", "addr", "add", "198.18.1.1/24", "dev", "cni0", ns=node)
    sh("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", ns=node)
    sh("iptables", "-N", "KUBE-FIREWALL", ns=node)
    sh("iptables", "-A", "INPUT", "-j", "KUBE-FIREWALL", ns=node)
    sh("iptables", "-A", "KUBE-FIREWALL", "-j", "DROP", ns=node)
    rc, out = doctor(node)
    assert rc == 1
    assert "bridge-nf-call-iptables=0" in out and "cni0" in out
    assert "-A KUBE-FIREWALL -j DROP" in out and "matches every packet" in out


def test_unknown_namespace_cannot_be_checked() -> None:
    res = run_cli("doctor", "--netns", "dt-no-such-ns")
    assert res.rc == 2 and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "s", [s for s in SCENARIOS if s.seed], ids=[s.name for s in SCENARIOS if s.seed]
)
def test_doctor_flags_each_field_reports_fault_on_its_lab_topology(s: Scenario) -> None:
    prefix = "dtlab-" + unique_name("doc").removeprefix("dt-") + "-"
    try:
        assert run_cli("lab", "up", s.name, "--prefix", prefix).rc == 0
        rc, out = doctor(prefix + s.fault_node)
        assert rc == 1, out
        assert "fail" in out or "warn" in out
    finally:
        run_cli("lab", "down", "--prefix", prefix)
    assert lab_namespaces(prefix) == []


def test_rules_in_both_iptables_backends_are_a_warning(netns: MakeNetns) -> None:
    ns = netns("mixed")
    sh("iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT", ns=ns)
    sh("iptables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "23", "-j", "DROP", ns=ns)
    rc, out = doctor(ns)
    assert rc == 1 and "rules in both iptables backends" in out and "legacy: 1" in out
