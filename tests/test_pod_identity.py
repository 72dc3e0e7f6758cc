"""The pure parts of pod identity: reading a pod UID from a cgroup path as kubelet writes
it, and service names from kube-proxy's rule comments. No root needed."""

from __future__ import annotations

from ipaddress import ip_address

from tracer.enrich.pods_node import pod_uid
from tracer.enrich.services_node import parse_rules

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def test_pod_uid_from_systemd_and_cgroupfs_drivers() -> None:
    systemd = (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-abc.scope\n"
    )
    cgroupfs = f"12:memory:/kubepods/besteffort/pod{UID}/4f3e\n0::/\n"
    assert pod_uid(systemd) == UID
    assert pod_uid(cgroupfs) == UID
    assert pod_uid("0::/system.slice/ssh.service\n") is None
    assert pod_uid(f"0::/user.slice/pod{UID}\n") is None  # not kubelet's


def test_services_from_kube_proxy_comments() -> None:
    save = "\n".join(
        [
            "*nat",
            "-A KUBE-SERVICES -d 198.19.0.10/32 -p udp -m comment --comment "
            '"kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU',
            "-A KUBE-SERVICES -d 192.0.2.200/32 -p tcp -m comment --comment "
            '"shop/web loadbalancer IP" -m tcp --dport 80 -j KUBE-FW-X',
            '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POST',
        ]
    )
    found = parse_rules(save)
    assert found[ip_address("198.19.0.10")].ref == "kube-system/kube-dns"
    assert found[ip_address("192.0.2.200")].ref == "shop/web"
    assert len(found) == 2
