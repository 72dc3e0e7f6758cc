"""Whose packet: lab pods named as namespace/name on the drops, from the node alone or from
the Kubernetes API, and --pod scoping the trace to one pod's traffic in the kernel."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.helpers import Droptrace, LabUp, k8s_ns, lab_pod_uid, lab_prefix, run_cli, send_udp
from tests.kubeapi import KubeApi, pod, service, write_kubeconfig
from tracer.lab import labpods

pytestmark = pytest.mark.root

# No kubeconfig: the node-local path alone (the machine's own config, if any, is not used).
NO_API = {"KUBECONFIG": "/nonexistent/kubeconfig"}


# (scenario, role of the dropped packet's source pod, of its destination pod, category,
#  the service it was sent to, named by kube-proxy's rule comment)
ENDS = [
    ("rp-filter-masquerade", None, "pod", "rp_filter", None),
    ("bridge-nf-hairpin", "backend", "client", "bridge_netfilter", "backend"),
    # Sent to the service's ClusterIP, DNAT'd to pod-b, then dropped: the entry it carried.
    ("ip-forward-off", "pod-a", "pod-b", "forwarding_disabled", "web"),
]


@pytest.mark.parametrize(("name", "src", "dst", "category", "svc"), ENDS, ids=[e[0] for e in ENDS])
def test_lab_drop_names_the_pods_at_both_ends_without_an_api(
    name: str, src: str | None, dst: str | None, category: str, svc: str | None
) -> None:
    prefix = lab_prefix()
    try:
        res = run_cli("lab", "run", name, "--json", "--prefix", prefix, env=NO_API)
        assert res.rc == 0, res.stderr
        events = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
        hits = [e for e in events if e["category"] == category]
        assert hits, events
        ns = k8s_ns(prefix)
        for e in hits:
            assert e["src_pod"] == (f"{ns}/{src}" if src else None), e
            assert e["dst_pod"] == (f"{ns}/{dst}" if dst else None), e
            assert e["svc"] == (f"{ns}/{svc}" if svc else None), e
        # The node-side end of the pod's veth comes with it.
        end = "dst" if dst else "src"
        role = dst or src
        assert hits[0]["evidence"][f"{end}_pod_host_iface"] == f"veth-{role}"
        assert labpods.pod_dirs(prefix) == []
    finally:
        run_cli("lab", "down", "--prefix", prefix)


def test_lab_down_removes_pod_processes_cgroups_and_kubelet_dirs(lab_up: LabUp) -> None:
    prefix = lab_up("no-route")
    dirs = labpods.pod_dirs(prefix)
    assert len(dirs) == 2
    cgroups = [
        Path(line.split("=", 1)[1])
        for d in dirs
        for line in (d / labpods.MARKER).read_text().splitlines()
        if line.startswith("cgroup=")
    ]
    pids = [int(p) for cg in cgroups for p in (cg / "cgroup.procs").read_text().split()]
    assert pids, "no sandbox process in the pod cgroups"
    assert all("kubepods" in str(cg) and "pod" in cg.parent.name for cg in cgroups)
    res = run_cli("lab", "down", "--prefix", prefix)
    assert res.rc == 0, res.stderr
    assert not any(d.exists() for d in dirs)
    assert not any(cg.exists() for cg in cgroups)
    assert not any(_running(p) for p in pids)


def _running(pid: int) -> bool:
    """Alive, not a zombie waiting for a parent that is not ours to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_pod_filter_shows_that_pods_drops_only(lab_up: LabUp) -> None:
    prefix = lab_up("no-route")
    ns = k8s_ns(prefix)
    args = ("--json", "--pod", "pod-a", "-n", ns, "--duration", "6")
    with Droptrace(*args, env=NO_API) as dt:
        send_udp(prefix + "pod-a", "198.18.1.1", 9)  # NO_SOCKET on node1: pod-a's
        send_udp(prefix + "pod-b", "198.18.2.1", 9)  # NO_SOCKET on node2: pod-b's only
        send_udp(prefix + "pod-a", "198.18.2.2", 7)  # no route on node1: pod-a to pod-b
        res = dt.wait()
    assert res.rc == 0, res.stderr
    assert f"pod {ns}/pod-a (198.18.1.2 via veth-pod-a)" in res.stderr
    reasons = {e["reason"] for e in res.events}
    assert {"NO_SOCKET", "IP_INNOROUTES"} <= reasons, res.events
    for e in res.events:
        assert e["src_pod"] == f"{ns}/pod-a" or e["dst_pod"] == f"{ns}/pod-a", e
        assert e["src"] != "198.18.2.2", e  # none of pod-b's own traffic
    # Filtered in the kernel: its exact totals count pod-a's 3 NO_SOCKET drops, not pod-b's.
    assert "NO_SOCKET 3" in res.stderr, res.stderr


def test_unknown_pod_is_one_line_with_the_closest_names(lab_up: LabUp) -> None:
    prefix = lab_up("iptables-corrupt-firewall")
    res = run_cli("--pod", "pdo", "-n", k8s_ns(prefix), env=NO_API)
    assert res.rc == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "no pod 'pdo'" in res.stderr and "did you mean pod?" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    res = run_cli("--pod", "no-such-pod", env=NO_API)
    assert res.rc == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_pod_in_two_namespaces_is_one_line_listing_them(lab_up: LabUp) -> None:
    a, b = lab_up("iptables-corrupt-firewall"), lab_up("iptables-corrupt-firewall")
    res = run_cli("--pod", "pod", env=NO_API)
    assert res.rc == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"{k8s_ns(a)}/pod" in res.stderr and f"{k8s_ns(b)}/pod" in res.stderr
    assert "-n" in res.stderr and "Traceback" not in res.stderr


def test_api_names_pods_and_services_and_follows_a_reused_ip(
    lab_up: LabUp,
    tmp_path: Path,
) -> None:
    prefix = lab_up("ip-forward-off")
    old = pod("shop", "web-old", "198.18.1.2", uid=lab_pod_uid(prefix, "pod-a"))
    api = KubeApi([old], [service("shop", "web", "198.19.0.10")])
    try:
        env = {"KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig"))}
        with Droptrace("--json", "--ip", "198.18.1.2/32", "--duration", "7", env=env) as dt:
            send_udp(prefix + "pod-a", "198.18.1.1", 9, n=1)  # NO_SOCKET on node1
            send_udp(prefix + "pod-a", "198.19.0.10", 81, n=1)  # to the ClusterIP, unrouted
            time.sleep(1)
            # The pod is deleted and a new one gets its address.
            api.event("pods", "DELETED", old)
            api.event("pods", "ADDED", pod("shop", "web-new", "198.18.1.2"))
            time.sleep(1.5)
            send_udp(prefix + "pod-a", "198.18.1.1", 10, n=1)
            res = dt.wait()
    finally:
        api.close()
    assert res.rc == 0, res.stderr
    assert "Kubernetes API not used" not in res.stderr
    by_port = {e["dport"]: e for e in res.events}
    assert by_port[9]["src_pod"] == "shop/web-old"
    assert by_port[9]["evidence"]["src_pod_host_iface"] == "veth-pod-a"  # joined by pod UID
    assert by_port[81]["svc"] == "shop/web"
    assert by_port[10]["src_pod"] == "shop/web-new"


def test_api_server_down_still_names_pods_from_the_node(
    lab_up: LabUp,
    tmp_path: Path,
) -> None:
    prefix = lab_up("no-route")
    # A port nothing listens on: the API server is down.
    env = {"KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9"))}
    args = ("--json", "--pod", "pod-a", "-n", k8s_ns(prefix), "--duration", "4")
    with Droptrace(*args, env=env) as dt:
        send_udp(prefix + "pod-a", "198.18.1.1", 9, n=2)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if "Kubernetes API not used" in line]
    assert len(notes) == 1 and "did not answer" in notes[0]
    assert [e["src_pod"] for e in res.events] == [f"{k8s_ns(prefix)}/pod-a"] * 2
    assert os.path.exists(f"/run/netns/{prefix}pod-a")
