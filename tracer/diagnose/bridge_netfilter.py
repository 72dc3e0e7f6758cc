"""Bridge netfilter: a reply between pods on one bridge skipped iptables
(bridge-nf-call-iptables=0, or br_netfilter not loaded), so conntrack never reversed the
service's DNAT and the client got a reply from the backend's own address."""

from __future__ import annotations

from tracer.diagnose.base import Cause, Read, Site, at
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import Dnat, Evidence
from tracer.model.findings import Finding, Level, NamespaceFacts
from tracer.system import sysctl

KNOB = "net.bridge.bridge-nf-call-iptables"
FIX = f"modprobe br_netfilter; sysctl -w {KNOB}=1"


def _setting(value: int | None) -> str:
    return "br_netfilter is not loaded" if value is None else f"{KNOB}=0"


def evidence(site: Site) -> Read | None:
    d = site.drop
    if site.reason != "NO_SOCKET" or d.src is None or d.dst is None:
        return None
    if d.sport is None or d.dport is None:
        return None
    sport, dport = d.sport, d.dport

    def read() -> tuple[Evidence, ...]:
        for ref in site.names.all():
            found = site.conntrack.dnat_origin(
                ref.path, d.l4proto, str(d.src), sport, str(d.dst), dport
            )
            if found is None:
                continue
            value = sysctl.read(ref.path, [KNOB])[KNOB]
            return (
                Dnat(
                    ref.name,
                    found.original_dst,
                    found.original_dport,
                    found.backend,
                    found.state,
                    value,
                ),
            )
        return ()

    return Read(("dnat", d.l4proto, d.src, d.sport, d.dst, d.dport), read)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    dnat = facts.find(Dnat)
    if dnat is None or dnat.bridge_nf_call_iptables not in (0, None):
        return None
    explanation = (
        f"reply from backend {drop.src}:{drop.sport} reached {drop.dst}:{drop.dport} straight over"
        f" the bridge instead of from the service {dnat.service}:{dnat.service_port}:"
        f" {_setting(dnat.bridge_nf_call_iptables)} in netns {dnat.netns}, so bridged traffic"
        f" skipped iptables, conntrack never reversed the DNAT, and {drop.dst} had no socket for"
        f" it ({facts.reason} on {at(facts)})"
    )
    fix = f"{FIX} in netns {dnat.netns} (and persist it in /etc/sysctl.d)"
    return Diagnosis(Category.BRIDGE_NETFILTER, explanation, fix)


def doctor(f: NamespaceFacts) -> list[Finding]:
    """Bridged pod traffic must traverse iptables for service NAT."""
    if not f.bridges:
        return []
    knob = f.sysctls.get(KNOB)
    if knob not in (0, None):
        return [Finding(Level.OK, f"bridge netfilter on in {f.where}")]
    return [
        Finding(
            Level.FAIL,
            f"{_setting(knob).replace('net.bridge.', '')} in {f.where} with bridge"
            f" {', '.join(f.bridges)}: replies between pods on the bridge skip iptables,"
            " so service DNAT is never reversed",
            f"{FIX} in {f.where}",
        )
    ]


CAUSE = Cause(
    "bridge_netfilter",
    Category.BRIDGE_NETFILTER,
    diagnose=diagnose,
    evidence=evidence,
    doctor=doctor,
)
