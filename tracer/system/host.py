"""Host and namespace facts for reports and `doctor`: kernel, firewall backend, sysctls."""

from __future__ import annotations

import hashlib
import os
import platform
import re
from pathlib import Path

from tracer.system import netns
from tracer.system.netlink import IPRoute

_CONF = Path("/proc/sys/net/ipv4/conf")
BRIDGE_KNOBS = (
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.bridge.bridge-nf-call-arptables",
)
CONNTRACK_KNOBS = ("net.netfilter.nf_conntrack_count", "net.netfilter.nf_conntrack_max")


def _run(*cmd: str, ns_path: Path | None = None) -> str:
    return netns.command(ns_path, *cmd)


def kernel() -> dict[str, str]:
    u = os.uname()
    return {
        "release": u.release,
        "version": u.version,
        "machine": u.machine,
        "os": platform.system(),
    }


def iptables_version() -> str | None:
    """e.g. 'iptables v1.8.9 (nf_tables)': the backend `iptables` points to."""
    out = _run("iptables", "--version").strip()
    return out or None


def ruleset_digest(ns_path: Path | None = None) -> str | None:
    out = _run("nft", "list", "ruleset", ns_path=ns_path)
    return hashlib.sha256(out.encode()).hexdigest()[:16] if out else None


def rule_counts(ns_path: Path) -> dict[str, int]:
    """Rules per iptables backend in a namespace (both non-zero: mixed backends)."""
    counts = {}
    for backend in ("nft", "legacy"):
        counts[backend] = sum(
            1
            for cmd in (f"iptables-{backend}-save", f"ip6tables-{backend}-save")
            for line in _run(cmd, ns_path=ns_path).splitlines()
            if line.startswith("-A ")
        )
    return counts


def sysctls(ns_path: Path) -> dict[str, int | None]:
    """The sysctls that decide the seeds' failures, for every interface of the namespace."""

    def read() -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        names = sorted(p.name for p in _CONF.iterdir())
        out["net.ipv4.ip_forward"] = _int(Path("/proc/sys/net/ipv4/ip_forward"))
        out["net.ipv6.conf.all.forwarding"] = _int(Path("/proc/sys/net/ipv6/conf/all/forwarding"))
        for name in names:
            for knob in ("rp_filter", "forwarding"):
                out[f"net.ipv4.conf.{name}.{knob}"] = _int(_CONF / name / knob)
        for key in (*BRIDGE_KNOBS, *CONNTRACK_KNOBS):
            out[key] = _int(Path("/proc/sys") / key.replace(".", "/"))
        return out

    return netns.run_in(ns_path, read)


def _int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def interfaces(ns_path: Path) -> list[str]:
    return netns.run_in(ns_path, lambda: sorted(p.name for p in _CONF.iterdir()))


def addressed_interfaces(ns_path: Path, family: int = 2) -> list[str]:
    """Interfaces other than lo that carry an IPv4 (family 10: a global IPv6) address: the
    ones packets are routed between."""

    def read() -> list[str]:
        with IPRoute() as ipr:
            names = {int(x["index"]): str(x.get_attr("IFLA_IFNAME")) for x in ipr.get_links()}
            return sorted(
                {
                    names.get(int(a["index"]), "?")
                    for a in ipr.get_addr(family=family)
                    if family == 2 or a["scope"] == 0  # IPv6: not link-local
                }
                - {"lo"}
            )

    return netns.run_in(ns_path, read)


def bridges(ns_path: Path) -> list[str]:
    """Bridge devices of the namespace (sysfs would show the host's, so ask netlink)."""

    def read() -> list[str]:
        with IPRoute() as ipr:
            return sorted(
                str(link.get_attr("IFLA_IFNAME"))
                for link in ipr.get_links()
                if (info := link.get_attr("IFLA_LINKINFO"))
                and info.get_attr("IFLA_INFO_KIND") == "bridge"
            )

    return netns.run_in(ns_path, read)


def masquerades(ns_path: Path) -> bool:
    saved = _run("iptables-save", "-t", "nat", ns_path=ns_path) + _run(
        "nft", "list", "ruleset", ns_path=ns_path
    )
    return bool(re.search(r"MASQUERADE|masquerade", saved))
