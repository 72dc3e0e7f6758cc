"""`droptrace doctor`: the seeds' known-bad settings, checked before any packet is lost.

`gather` reads one namespace; `check` is pure and turns those facts into findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from tracer.enrich import host, netfilter, netns
from tracer.enrich.netns import NetnsRef

_BUILTIN_CHAINS = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    what: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class NamespaceFacts:
    name: str
    sysctls: dict[str, int | None]
    interfaces: list[str]  # with an IPv4 address, without lo
    bridges: list[str]
    masquerade: bool
    rule_counts: dict[str, int]
    unconditional_drops: list[str] = field(default_factory=list)  # rule texts, user chains


def gather(ref: NetnsRef) -> NamespaceFacts:
    path: Path = ref.path
    ifaces = host.addressed_interfaces(path)
    drops = []
    for cmd, family in (("iptables-nft-save", "ipv4"), ("iptables-legacy-save", "ipv4")):
        text = netns.command(path, cmd, "-c")
        for r in netfilter.parse_iptables_save(text, family):
            if r.matches_everything and r.rule.chain not in _BUILTIN_CHAINS:
                drops.append(f"{cmd.split('-save')[0]} -t {r.rule.table} {r.rule.text}")
    return NamespaceFacts(
        name=ref.name,
        sysctls=host.sysctls(path),
        interfaces=ifaces,
        bridges=host.bridges(path),
        masquerade=host.masquerades(path),
        rule_counts=host.rule_counts(path),
        unconditional_drops=drops,
    )


def check(f: NamespaceFacts) -> list[Finding]:
    out: list[Finding] = []
    ns = f"netns {f.name}"
    s = f.sysctls
    routes_packets = len(f.interfaces) >= 2 or bool(f.bridges)

    # rp_filter: the kernel uses max(conf.all, conf.<iface>).
    v_all = s.get("net.ipv4.conf.all.rp_filter") or 0
    strict = [
        i for i in f.interfaces if max(v_all, s.get(f"net.ipv4.conf.{i}.rp_filter") or 0) == 1
    ]
    if strict and (f.masquerade or len(f.interfaces) >= 2):
        why = "pod traffic is masqueraded" if f.masquerade else "it has several interfaces"
        level = Level.FAIL if f.masquerade else Level.WARN
        out.append(
            Finding(
                level,
                f"strict rp_filter on {', '.join(strict)} in {ns} (effective = max(conf.all="
                f"{v_all}, conf.<iface>)) while {why}: replies on an asymmetric path are dropped",
                "; ".join(f"sysctl -w net.ipv4.conf.{i}.rp_filter=2" for i in strict)
                + (" (and conf.all.rp_filter <= 2)" if v_all > 2 else ""),
            )
        )
    else:
        out.append(Finding(Level.OK, f"rp_filter in {ns}: no strict mode on a routing path"))

    # Forwarding: only a node that routes (several interfaces or a bridge) needs it.
    if routes_packets:
        off = [i for i in f.interfaces if s.get(f"net.ipv4.conf.{i}.forwarding") == 0]
        if s.get("net.ipv4.ip_forward") == 0:
            out.append(
                Finding(
                    Level.FAIL,
                    f"ip_forward=0 in {ns}, which routes between {', '.join(f.interfaces)}",
                    f"sysctl -w net.ipv4.ip_forward=1 in {ns}",
                )
            )
        elif off:
            out.append(
                Finding(
                    Level.FAIL,
                    f"forwarding off on {', '.join(off)} in {ns}"
                    " (net.ipv4.conf.<iface>.forwarding=0)",
                    "; ".join(f"sysctl -w net.ipv4.conf.{i}.forwarding=1" for i in off),
                )
            )
        else:
            out.append(Finding(Level.OK, f"forwarding on in {ns}"))
    else:
        out.append(
            Finding(Level.OK, f"{ns} is a plain host (one interface): forwarding not needed")
        )

    # Bridge netfilter: bridged pod traffic must traverse iptables for service NAT.
    if f.bridges:
        knob = s.get("net.bridge.bridge-nf-call-iptables")
        if knob is None or knob == 0:
            setting = "br_netfilter is not loaded" if knob is None else "bridge-nf-call-iptables=0"
            out.append(
                Finding(
                    Level.FAIL,
                    f"{setting} in {ns} with bridge {', '.join(f.bridges)}: replies between pods on"
                    " the bridge skip iptables, so service DNAT is never reversed",
                    "modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1"
                    f" in {ns}",
                )
            )
        else:
            out.append(Finding(Level.OK, f"bridge netfilter on in {ns}"))

    # iptables: two backends at once, or a rule that drops everything that reaches it.
    if f.rule_counts.get("nft") and f.rule_counts.get("legacy"):
        out.append(
            Finding(
                Level.WARN,
                f"rules in both iptables backends in {ns} (nft: {f.rule_counts['nft']},"
                f" legacy: {f.rule_counts['legacy']}): tools of different versions fight",
                "use one backend everywhere (update-alternatives --set iptables ...)",
            )
        )
    for text in f.unconditional_drops:
        out.append(
            Finding(
                Level.FAIL,
                f"`{text}` in {ns} matches every packet (no match before its verdict)",
                "restore the rule's match (e.g. -m mark --mark 0x8000/0x8000 for KUBE-FIREWALL)"
                " or delete it",
            )
        )
    if not f.unconditional_drops and not (f.rule_counts.get("nft") and f.rule_counts.get("legacy")):
        out.append(Finding(Level.OK, f"iptables in {ns}: one backend, no match-less DROP rule"))
    return out


def hook_findings(
    active: list[str], missing: list[str], optional: list[str], kernel_reasons: bool
) -> list[Finding]:
    """Which hooks droptrace attached; cause hooks matter only where kfree_skb has no reason."""
    out = [Finding(Level.OK, f"hooks active: {', '.join(active)}")]
    out += [Finding(Level.WARN, f"hook unavailable: {m}") for m in missing]
    if kernel_reasons:
        out += [
            Finding(Level.OK, f"cause hook not attached (kfree_skb gives reasons here): {m}")
            for m in optional
        ]
    else:
        out += [
            Finding(
                Level.WARN,
                f"cause hook unavailable on a kernel without drop reasons: {m}",
                "rp_filter or netfilter drops may show as category other; a kernel with"
                " kprobes or fexit (or 5.17+) names them",
            )
            for m in optional
        ]
    return out
