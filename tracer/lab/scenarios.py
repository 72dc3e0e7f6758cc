"""The lab's scenarios as data. Each has a folder scenarios/<name>/ with topology.sh (netns
lab only), fault.sh (inject|undo, run on the faulty node; shared with vagrant/) and
traffic.sh. Nothing here is read by droptrace's diagnosis: the lab only builds and breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_DIR = Path(__file__).resolve().parent / "scenarios"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    seed: str | None  # the field report in shared/seeds it reproduces
    title: str
    namespaces: tuple[str, ...]  # roles topology.sh creates (namespace = prefix + role)
    fault_node: str  # role whose namespace runs fault.sh
    fault_env: tuple[tuple[str, str], ...]  # env of fault.sh in the netns lab
    # What a user should see (used by the tests, never by droptrace):
    drop_node: str
    drop_iface: str
    category: str
    reason_618: str  # the kernel's reason on the 6.18 development kernel


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "rp-filter-masquerade",
        "rp-filter-masquerade.txt",
        "pods lose the internet: masqueraded replies come back on another link, strict rp_filter",
        ("pod", "node", "inet"),
        "node",
        (("REPLY_IFACE", "eth2"), ("POD_CIDR", "198.18.0.0/16")),
        "node",
        "eth2",
        "rp_filter",
        "IP_RPFILTER",
    ),
    Scenario(
        "metallb-asymmetric",
        "metallb-asymmetric-rp-filter.txt",
        "LoadBalancer VIP on node1, pod on node2: node2's strict rp_filter drops the requests",
        ("lan", "client", "node1", "node2", "pod"),
        "node2",
        (("CLUSTER_IFACE", "eth1"),),
        "node2",
        "eth1",
        "rp_filter",
        "IP_RPFILTER",
    ),
    Scenario(
        "bridge-nf-hairpin",
        "bridge-netfilter-hairpin.txt",
        "same-node ClusterIP times out: bridge-nf-call-iptables=0, reply from the pod IP",
        ("node", "client", "backend"),
        "node",
        (),
        "client",
        "eth0",
        "bridge_netfilter",
        "NO_SOCKET",
    ),
    Scenario(
        "iptables-corrupt-firewall",
        "iptables-version-mismatch.txt",
        "KUBE-FIREWALL rewritten without its mark match drops everything to the node",
        ("pod", "node"),
        "node",
        (("IPTABLES", "iptables"),),
        "node",
        "veth-pod",
        "netfilter",
        "NETFILTER_DROP",
    ),
    Scenario(
        "ip-forward-off",
        "ip-forward-off.txt",
        "pod-to-service SYNs never answered: ip_forward=0 on the node",
        ("pod-a", "node1", "node2", "pod-b"),
        "node1",
        (),
        "node1",
        "veth-pod-a",
        "forwarding_disabled",
        "IP_INADDRERRORS",
    ),
    Scenario(
        "no-route",
        None,
        "pod-to-pod across nodes: the node has no route to the other pod CIDR",
        ("pod-a", "node1", "node2", "pod-b"),
        "node1",
        (("REMOTE_POD_CIDR", "198.18.2.0/24"), ("REMOTE_NODE_IP", "198.51.100.2")),
        "node1",
        "veth-pod-a",
        "no_route",
        "IP_INNOROUTES",
    ),
)


def by_name(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(name)


def scenario_dir(name: str) -> Path:
    return _DIR / name
