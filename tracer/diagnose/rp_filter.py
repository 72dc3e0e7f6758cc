"""rp_filter: the reverse-path filter dropped a packet whose source it would not route back.

The kernel applies max(conf.all.rp_filter, conf.<iface>.rp_filter), not the most specific
setting: the evidence carries both values and the effective one.
"""

from __future__ import annotations

from tracer.diagnose.base import NO_ROUTE_TYPES, Cause, Read, Site
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import Evidence, RpFilter
from tracer.model.findings import Finding, Level, NamespaceFacts
from tracer.system import routes, sysctl

_MODES = {1: "strict", 2: "loose"}


def loose(iface: str) -> str:
    """The command that makes rp_filter loose on one interface."""
    return f"sysctl -w net.ipv4.conf.{iface}.rp_filter=2"


def evidence(site: Site) -> Read | None:
    iface, src = site.iface, site.drop.src
    if site.reason != "IP_RPFILTER" or not iface or src is None:
        return None

    def read() -> tuple[Evidence, ...]:
        k_all, k_if = "net.ipv4.conf.all.rp_filter", sysctl.conf_key(iface, "rp_filter")
        values = sysctl.read(site.ref.path, [k_all, k_if])
        back = routes.lookup(site.ref.path, str(src))
        return (RpFilter(iface, values[k_all] or 0, values[k_if] or 0, back),)

    return Read(("rp", site.drop.netns, iface, src), read)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    rp = facts.find(RpFilter)
    if rp is None:
        return None
    iface = facts.iface or "?"
    eff, back = rp.effective, rp.route_back
    mode = _MODES.get(eff, f"mode {eff}")
    values = f"effective {eff} = max(conf.all={rp.all}, conf.{iface}={rp.on_iface})"
    ns = f"in netns {facts.netns}"
    if back.kind in NO_ROUTE_TYPES:
        why = f"there is no route back to {drop.src} at all"
        fix = (
            f"add a route back to {drop.src} via {iface} {ns}; loose mode would drop it too"
            f" (to turn the check off, conf.{iface}.rp_filter and conf.all.rp_filter must be 0)"
        )
    elif back.kind == "local":
        why = f"{drop.src} is one of this namespace's own addresses (a martian source)"
        fix = f"find who sends with a source of {drop.src}; it should not arrive on {iface}"
    else:
        expected = back.oif or "?"
        why = f"the route back to {drop.src} leaves via {expected}, not {iface} (asymmetric path)"
        fix = (
            f"{loose(iface)} {ns} (loose: the kernel uses the max of"
            f" conf.all and conf.{iface}, so {iface}=2 is enough while conf.all <= 2); or make the"
            " reply path symmetric (e.g. a LoadBalancer service with externalTrafficPolicy: Local)"
        )
        if eff == 2:
            fix = f"add a route back to {drop.src} via {iface} {ns}"
    explanation = (
        f"rp_filter {mode} drop ({values}) of source {drop.src} arriving on {iface} {ns}: {why}"
    )
    return Diagnosis(Category.RP_FILTER, explanation, fix)


def doctor(f: NamespaceFacts) -> list[Finding]:
    """Strict mode on a namespace that routes masqueraded traffic or has several links."""
    s = f.sysctls
    v_all = s.get("net.ipv4.conf.all.rp_filter") or 0
    strict = [
        i for i in f.interfaces if max(v_all, s.get(f"net.ipv4.conf.{i}.rp_filter") or 0) == 1
    ]
    if not (strict and (f.masquerade or len(f.interfaces) >= 2)):
        return [Finding(Level.OK, f"rp_filter in {f.where}: no strict mode on a routing path")]
    why = "pod traffic is masqueraded" if f.masquerade else "it has several interfaces"
    return [
        Finding(
            Level.FAIL if f.masquerade else Level.WARN,
            f"strict rp_filter on {', '.join(strict)} in {f.where} (effective = max(conf.all="
            f"{v_all}, conf.<iface>)) while {why}: replies on an asymmetric path are dropped",
            "; ".join(loose(i) for i in strict)
            + (" (and conf.all.rp_filter <= 2)" if v_all > 2 else ""),
        )
    ]


CAUSE = Cause(
    "rp_filter",
    Category.RP_FILTER,
    reasons={"IP_RPFILTER": "reverse-path filter (rp_filter) rejected the source"},
    diagnose=diagnose,
    evidence=evidence,
    doctor=doctor,
)
