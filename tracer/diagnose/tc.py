"""tc: a classifier or a BPF program on the device dropped the packet (TC_INGRESS/TC_EGRESS:
TC_ACT_SHOT). The programs attached to that device and direction are named (tcx first,
they run first), so the person on call knows whose policy it is: a CNI's (Cilium's
cil_from_container, Calico's calico_*), a node agent's, or a leftover."""

from __future__ import annotations

from tracer.diagnose.base import Cause, Read, Site
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.devices import TcFilters, TcProgram
from tracer.model.evidence import Evidence
from tracer.system import tc

REASONS = {
    "TC_INGRESS": "a tc ingress filter dropped it",
    "TC_EGRESS": "a tc egress filter dropped it",
    "TC_COOKIE_ERROR": "a tc filter's cookie did not match (the filter changed meanwhile)",
    "TC_CHAIN_NOTFOUND": "a tc filter jumped to a chain that does not exist",
    "TC_RECLASSIFY_LOOP": "tc reclassified the packet too many times",
}
# Whose programs these are, by the names their projects give them.
OWNERS = {"cil_": "Cilium", "calico_": "Calico", "cali_": "Calico"}


def direction_of(reason: str) -> str:
    return "ingress" if reason == "TC_INGRESS" else "egress"


def owner(p: TcProgram) -> str | None:
    return next((who for pre, who in OWNERS.items() if (p.name or "").startswith(pre)), None)


def evidence(site: Site) -> Read | None:
    iface = site.iface
    if site.reason not in REASONS or not iface:
        return None
    direction = direction_of(site.reason)

    def read() -> tuple[Evidence, ...]:
        found = tc.programs(site.ref.path, iface, direction)
        return (TcFilters(iface, direction, tuple(found)),)

    return Read(("tc", site.drop.netns, iface, direction), read)


def _describe(p: TcProgram) -> str:
    if p.kind != "bpf":
        return f"a {p.kind} filter (pref {p.pref})"
    what = f"BPF program {p.name or '?'} (id {p.prog_id}, tag {p.tag}, {p.attach}"
    what += f", {p.section}" if p.section else ""
    who = owner(p)
    return what + (f"; {who}'s)" if who else ")")


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    f = facts.find(TcFilters)
    if f is None:
        return None
    where = f"{f.direction} of {f.dev} in netns {facts.netns}"
    what = REASONS.get(facts.reason, "tc dropped it")
    if not f.programs:
        explanation = f"{what}: on {where}, but nothing is attached there any more"
        return Diagnosis(Category.TC, explanation, "the program or filter was removed since")
    first = f.programs[0]
    listed = "; ".join(_describe(p) for p in f.programs)
    explanation = (
        f"{what} (the program returned TC_ACT_SHOT) on {where}: attached there: {listed};"
        f" the packet from {drop.src} to {drop.dst} was dropped"
    )
    who = owner(first)
    if first.kind == "bpf" and first.prog_id is not None:
        fix = (
            f"it is {who}'s policy: check {who}'s view of this flow (its network policy)"
            if who
            else f"find whose program {first.name} is (bpftool prog show id {first.prog_id}"
            " names the processes holding it) and whether its policy should drop this"
        )
        if first.attach == "tc" and first.pref is not None:
            fix += (
                f"; a test-only removal: tc filter del dev {f.dev} {f.direction} pref {first.pref}"
            )
    else:
        fix = f"tc filter show dev {f.dev} {f.direction} in netns {facts.netns}: change the filter"
    return Diagnosis(Category.TC, explanation, fix)


CAUSE = Cause(
    "tc",
    Category.TC,
    reasons=REASONS,
    diagnose=diagnose,
    evidence=evidence,
    fix="find the tc program on that device and direction (tc filter show, bpftool net)",
)
