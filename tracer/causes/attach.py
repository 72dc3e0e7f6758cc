"""Choose, load and attach the cause hooks the running kernel allows.

fib_validate_source returning -EXDEV tells an rp_filter drop, nf_hook_slow returning an
error tells a netfilter drop with its hook and family. Each is attached as fexit, else as a
kprobe+kretprobe pair, else reported missing. They are programs of drop.bpf.o (cause.bpf.c
beside this file), loaded with the kfree_skb program whose maps they share.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field

from tracer import abi, libbpf
from tracer.model.tracing import HookState, HookStatus

# DROPTRACE_CAUSE_HOOKS=kprobe skips fexit, =off attaches none, =on loads them also where
# kfree_skb gives reasons: to check the fallbacks, or the hooks on a newer kernel.
FORCE_ENV = "DROPTRACE_CAUSE_HOOKS"


@dataclass(frozen=True, slots=True)
class Cause:
    function: str
    index: str  # DT_CAUSE_* in events.h
    fexit: str
    kprobe: str
    kretprobe: str


CAUSES = (
    Cause(
        "fib_validate_source", "DT_CAUSE_RPFILTER", "dt_rp_fexit", "dt_rp_kprobe", "dt_rp_kretprobe"
    ),
    Cause("nf_hook_slow", "DT_CAUSE_NETFILTER", "dt_nf_fexit", "dt_nf_kprobe", "dt_nf_kretprobe"),
)
# What to load, tried in order until the object loads: a kernel that refuses fexit (EPERM
# on a locked-down host) still loads kprobe programs, which then may or may not attach.
LOAD_PLANS: tuple[tuple[str, ...], ...] = (("fexit", "kprobe"), ("kprobe",), ())


@dataclass(slots=True)
class Attached:
    """The cause hooks a tracer has: which DT_CAUSE_* are on, their links (a recorder pins
    them with the kfree_skb link), and every hook's status."""

    on: dict[str, bool] = field(default_factory=dict)
    links: list[tuple[str, libbpf.Link]] = field(default_factory=list)
    hooks: list[HookStatus] = field(default_factory=list)


def plans(needed: bool) -> tuple[tuple[str, ...], ...]:
    """What to try loading. Where kfree_skb gives reasons (`needed` False) nothing: the hooks
    would only add evidence there, and fexit on nf_hook_slow and fib_validate_source runs for
    every packet that passes them, dropped or not, watched or filtered out."""
    forced = os.environ.get(FORCE_ENV)
    if forced == "off":
        return ((),)
    if forced == "kprobe":
        return (("kprobe",), ())
    if forced == "on" or needed:
        return LOAD_PLANS
    return ((),)


def programs(kinds: tuple[str, ...]) -> dict[str, bool]:
    """Autoload setting of every cause program for a load plan."""
    out = {}
    for c in CAUSES:
        out[c.fexit] = "fexit" in kinds
        out[c.kprobe] = out[c.kretprobe] = "kprobe" in kinds
    return out


def _shown(kind: str, c: Cause) -> str:
    """A hook as shown to users: fexit/fib_validate_source, kretprobe/nf_hook_slow."""
    return f"{'kretprobe' if kind == 'kprobe' else kind}/{c.function}"


def refused(kind: str, why: str) -> list[HookStatus]:
    """The hooks of a load plan whose programs the kernel would not load."""
    return [HookStatus(_shown(kind, c), HookState.REFUSED, why, cause=True) for c in CAUSES]


def attach(
    obj: libbpf.BpfObject, kinds: tuple[str, ...], stack: ExitStack, needed: bool
) -> Attached:
    """Attach each cause hook the loaded plan allows; the links are owned by `stack`."""
    out = Attached()
    for c in CAUSES:
        out.on[c.index] = False
        if "fexit" in kinds:
            try:
                out.links.append((c.fexit, stack.enter_context(obj.attach(c.fexit))))
                out.hooks.append(HookStatus(_shown("fexit", c), HookState.ACTIVE, cause=True))
                out.on[c.index] = True
                continue
            except OSError as err:
                why = libbpf.describe(err)
                out.hooks.append(HookStatus(_shown("fexit", c), HookState.REFUSED, why, True))
        if "kprobe" in kinds:
            try:
                with ExitStack() as pair:
                    entry = pair.enter_context(obj.attach(c.kprobe))
                    exit_ = pair.enter_context(obj.attach(c.kretprobe))
                    stack.enter_context(pair.pop_all())
                out.links += [(c.kprobe, entry), (c.kretprobe, exit_)]
                out.hooks.append(HookStatus(_shown("kprobe", c), HookState.ACTIVE, cause=True))
                out.on[c.index] = True
                continue
            except OSError as err:
                why = libbpf.describe(err)
                out.hooks.append(HookStatus(_shown("kprobe", c), HookState.REFUSED, why, True))
        elif not kinds:
            out.hooks.append(_not_loaded(c, needed))
    return out


def _not_loaded(c: Cause, needed: bool) -> HookStatus:
    forced = os.environ.get(FORCE_ENV)
    if forced == "off":
        return HookStatus(c.function, HookState.REFUSED, f"not loaded ({FORCE_ENV}=off)", True)
    if not needed and forced not in ("on", "kprobe"):
        # Said as "kfree_skb gives reasons here" by whoever shows it.
        return HookStatus(c.function, HookState.NOT_NEEDED, "not loaded", True)
    return HookStatus(
        c.function, HookState.REFUSED, "not loaded (fexit and kprobe programs refused)", True
    )


def configure(cfg: object, on: dict[str, bool], nf_span: tuple[int, int] | None) -> None:
    """Tell the kfree_skb program which causes are attached (dt_config.cause_on, nf_lo/hi)."""
    for name, attached in on.items():
        cfg.cause_on[abi.const(name)] = int(attached)  # type: ignore[attr-defined]
    if on.get("DT_CAUSE_NETFILTER") and nf_span is not None:
        cfg.nf_lo, cfg.nf_hi = nf_span  # type: ignore[attr-defined]
