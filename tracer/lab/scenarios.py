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
    fault_node: str  # role whose namespace runs fault.sh
    fault_env: tuple[tuple[str, str], ...]  # env of fault.sh in the netns lab (pairs: frozen)
    # What a user should see (used by the tests, never by droptrace):
    drop_node: str  # role (namespace) where the kernel drops the packet
    drop_iface: str  # interface the dropped packet arrived on there
    category: str
    reason_618: str  # the kernel's reason on the 6.18 development kernel
    namespaces: tuple[str, ...]  # roles topology.sh creates (namespace = prefix + role)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="rp-filter-masquerade",
        seed="rp-filter-masquerade.txt",
        title="pods lose the internet: strict rp_filter drops replies returning on another link",
        fault_node="node",
        fault_env=(("REPLY_IFACE", "eth2"), ("POD_CIDR", "198.18.0.0/16")),
        drop_node="node",
        drop_iface="eth2",
        category="rp_filter",
        reason_618="IP_RPFILTER",
        namespaces=("pod", "node", "inet"),
    ),
    Scenario(
        name="metallb-asymmetric",
        seed="metallb-asymmetric-rp-filter.txt",
        title="LB VIP on node1, pod on node2: node2's strict rp_filter drops forwarded requests",
        fault_node="node2",
        fault_env=(("CLUSTER_IFACE", "eth1"),),
        drop_node="node2",
        drop_iface="eth1",
        category="rp_filter",
        reason_618="IP_RPFILTER",
        namespaces=("lan", "client", "node1", "node2", "pod"),
    ),
    Scenario(
        name="bridge-nf-hairpin",
        seed="bridge-netfilter-hairpin.txt",
        title="same-node ClusterIP times out: bridge-nf-call-iptables=0, reply from the pod IP",
        fault_node="node",
        fault_env=(),
        drop_node="client",
        drop_iface="eth0",
        category="bridge_netfilter",
        reason_618="NO_SOCKET",
        namespaces=("node", "client", "backend"),
    ),
    Scenario(
        name="iptables-corrupt-firewall",
        seed="iptables-version-mismatch.txt",
        title="KUBE-FIREWALL rewritten without its mark match drops everything to the node",
        fault_node="node",
        fault_env=(("IPTABLES", "iptables"),),
        drop_node="node",
        drop_iface="veth-pod",
        category="netfilter",
        reason_618="NETFILTER_DROP",
        namespaces=("pod", "node"),
    ),
    Scenario(
        name="ip-forward-off",
        seed="ip-forward-off.txt",
        title="pod-to-service SYNs never answered: ip_forward=0 on the node",
        fault_node="node1",
        fault_env=(),
        drop_node="node1",
        drop_iface="veth-pod-a",
        category="forwarding_disabled",
        reason_618="IP_INADDRERRORS",
        namespaces=("pod-a", "node1", "node2", "pod-b"),
    ),
    Scenario(
        name="no-route",
        seed=None,
        title="pod-to-pod across nodes: the node has no route to the other pod CIDR",
        fault_node="node1",
        fault_env=(("REMOTE_POD_CIDR", "198.18.2.0/24"), ("REMOTE_NODE_IP", "198.51.100.2")),
        drop_node="node1",
        drop_iface="veth-pod-a",
        category="no_route",
        reason_618="IP_INNOROUTES",
        namespaces=("pod-a", "node1", "node2", "pod-b"),
    ),
)


def by_name(name: str) -> Scenario:
    """The scenario called name; KeyError if there is none."""
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(name)


def scenario_dir(name: str) -> Path:
    """The folder holding the scenario's topology.sh, fault.sh and traffic.sh."""
    return _DIR / name
