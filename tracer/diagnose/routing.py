"""No route: no route to the destination, or a blackhole/unreachable/prohibit route, in
whichever table policy routing (`ip rule`) sent the packet to."""

from __future__ import annotations

from tracer.diagnose.base import (
    NO_ROUTE_TYPES,
    Cause,
    Read,
    Site,
    is_routing_drop,
    routing_decision,
)
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import Evidence, Routing
from tracer.system import routes

_MAIN_TABLE = 254
_BAD_ROUTES = {"blackhole", "unreachable", "prohibit"}


def evidence(site: Site) -> Read | None:
    iface, src, dst = site.iface, site.drop.src, site.drop.dst
    if not iface or not is_routing_drop(site.reason, site.location):
        return None
    if src is None or dst is None:
        return None

    def read() -> tuple[Evidence, ...]:
        path = site.ref.path
        plain = routes.lookup(path, str(dst))
        # The lookup as the kernel made it: with the source and input interface, so policy
        # routing applies.
        received = routes.lookup(path, str(dst), src=str(src), iif=iface)
        return (Routing(plain, received),)

    return Read(("route", site.drop.netns, iface, src, dst), read)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    routing = routing_decision(drop, facts)
    if routing is None or routing.route.kind == "local":
        return None  # a local destination never needs a route added
    received = routing.as_received
    if received.kind not in NO_ROUTE_TYPES:
        received = routing.route
    kind = received.kind
    if kind not in NO_ROUTE_TYPES and facts.reason not in {"IP_INNOROUTES", "IP_OUTNOROUTES"}:
        return None
    ns = f"in netns {facts.netns}"
    table = f" in table {received.table}" if received.table not in (None, 0, _MAIN_TABLE) else ""
    rule = received.policy_rule
    via_rule = f" (ip rule {rule} chose table {rule.rsplit(' ', 1)[-1]})" if rule else ""
    if kind in _BAD_ROUTES:
        what = f"a {kind} route{table} matches {drop.dst}{via_rule}"
        fix = f"remove or replace the {kind} route covering {drop.dst}{table} {ns}"
    else:
        what = f"no route to {drop.dst}{table}{via_rule}"
        ip = "ip -6" if drop.dst is not None and drop.dst.version == 6 else "ip"
        fix = f"add a route to {drop.dst}'s network ({ip} route add CIDR via NEXT-HOP) {ns}"
    if rule:
        fix += f", or change the ip rule that sends this source to another table ({rule})"
    explanation = f"{what} {ns}; the packet arrived on {facts.iface or '?'} and was dropped"
    return Diagnosis(Category.NO_ROUTE, explanation, fix)


CAUSE = Cause(
    "routing",
    Category.NO_ROUTE,
    reasons={
        "IP_INNOROUTES": "no route to the destination",
        "IP_OUTNOROUTES": "no route to the destination for a local packet",
        "IPV6_NOROUTE": "no IPv6 route to the destination",
    },
    diagnose=diagnose,
    evidence=evidence,
)
