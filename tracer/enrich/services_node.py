"""Service names without an API server: kube-proxy (iptables mode) writes each service's
`namespace/name:port` into the comment of its KUBE-SERVICES rule, next to the address
(`-d 198.19.0.10/32 ... --comment "default/web:http cluster IP"`), on every node."""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from ipaddress import ip_interface

from tracer.enrich.podtypes import Service
from tracer.model import IPAddress
from tracer.system import netns

_COMMENT = re.compile(
    r"^(?P<ns>[a-z0-9.-]+)/(?P<name>[a-z0-9.-]+)(:\S*)? (cluster IP|external IP|loadbalancer IP)$"
)
RESCAN_INTERVAL = 10.0  # iptables-save per namespace: not per packet


def parse_rules(text: str) -> dict[IPAddress, Service]:
    """address -> service, from `iptables-save -t nat` output."""
    out: dict[IPAddress, Service] = {}
    for line in text.splitlines():
        if "--comment" not in line or " -d " not in line:
            continue
        try:
            words = shlex.split(line)
            addr = ip_interface(words[words.index("-d") + 1]).ip
            m = _COMMENT.match(words[words.index("--comment") + 1])
        except (ValueError, IndexError):
            continue
        if m is not None:
            out.setdefault(addr, Service(m["ns"], m["name"], (addr,)))
    return out


class NodeServices:
    """Services named by kube-proxy's rules in the host's and the named namespaces other
    than pods' (a pod's namespace holds no kube-proxy rules)."""

    def __init__(self, is_pod_netns: Callable[[int], bool]) -> None:
        self._is_pod = is_pod_netns
        self._by_ip: dict[IPAddress, Service] = {}
        self._scanned = -RESCAN_INTERVAL

    def _scan(self) -> None:
        self._scanned = time.monotonic()
        found: dict[IPAddress, Service] = {}
        for ref in netns.NetnsNames().all():
            if self._is_pod(ref.inode):
                continue
            path = None if ref.name == "host" else ref.path
            for addr, svc in parse_rules(netns.command(path, "iptables-save", "-t", "nat")).items():
                found.setdefault(addr, svc)
        self._by_ip = found

    def any(self) -> bool:
        """Whether kube-proxy's rules name any service (rescanned at most every interval)."""
        if not self._by_ip and time.monotonic() - self._scanned >= RESCAN_INTERVAL:
            self._scan()
        return bool(self._by_ip)

    def service(self, ip: IPAddress) -> Service | None:
        svc = self._by_ip.get(ip)
        if svc is None and time.monotonic() - self._scanned >= RESCAN_INTERVAL:
            self._scan()
            svc = self._by_ip.get(ip)
        return svc
