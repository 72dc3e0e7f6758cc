"""Hooks on the functions that decide a drop: how kernels without drop reasons get one.

Before 5.17 kfree_skb says only where a packet was freed. fib_validate_source returning
-EXDEV tells an rp_filter drop, nf_hook_slow returning an error tells a netfilter drop with
its hook and family. Each is attached as fexit, else as a kprobe+kretprobe pair, else
reported missing; programs of drop.bpf.c (bpf/cause.bpf.h) whose kernel side is there.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass

from tracer import abi, libbpf

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


def programs_of(kind: str) -> list[str]:
    """The hooks of one kind, as shown to users: fexit/fib_validate_source..."""
    return [f"{'kretprobe' if kind == 'kprobe' else kind}/{c.function}" for c in CAUSES]


def attach(
    obj: libbpf.BpfObject,
    kinds: tuple[str, ...],
    stack: ExitStack,
    active: list[str],
    unavailable: list[str],
    why: object,
    needed: bool = True,
) -> tuple[dict[str, bool], list[tuple[str, libbpf.Link]]]:
    """Attach each cause hook the loaded plan allows: {DT_CAUSE_* name: attached}, and the
    links by program name (a recorder pins them with the kfree_skb link)."""
    on: dict[str, bool] = {}
    links: list[tuple[str, libbpf.Link]] = []
    for c in CAUSES:
        on[c.index] = False
        if "fexit" in kinds:
            try:
                links.append((c.fexit, stack.enter_context(obj.attach(c.fexit))))
                active.append(f"fexit/{c.function}")
                on[c.index] = True
                continue
            except OSError as err:
                unavailable.append(f"fexit/{c.function}: {why(err)}")  # type: ignore[operator]
        if "kprobe" in kinds:
            try:
                with ExitStack() as pair:
                    entry = pair.enter_context(obj.attach(c.kprobe))
                    exit_ = pair.enter_context(obj.attach(c.kretprobe))
                    stack.enter_context(pair.pop_all())
                links += [(c.kprobe, entry), (c.kretprobe, exit_)]
                active.append(f"kretprobe/{c.function}")
                on[c.index] = True
                continue
            except OSError as err:
                unavailable.append(f"kretprobe/{c.function}: {why(err)}")  # type: ignore[operator]
        elif not kinds:
            unavailable.append(f"{c.function}: {_not_loaded(needed)}")
    return on, links


def _not_loaded(needed: bool) -> str:
    forced = os.environ.get(FORCE_ENV)
    if forced == "off":
        return f"not loaded ({FORCE_ENV}=off)"
    if not needed and forced not in ("on", "kprobe"):
        return "not loaded"  # said as "kfree_skb gives reasons here" by whoever shows it
    return "not loaded (fexit and kprobe programs refused)"


def configure(cfg: object, on: dict[str, bool], nf_span: tuple[int, int] | None) -> None:
    """Tell the kfree_skb program which causes are attached (dt_config.cause_on, nf_lo/hi)."""
    for name, attached in on.items():
        cfg.cause_on[abi.const(name)] = int(attached)  # type: ignore[attr-defined]
    if on.get("DT_CAUSE_NETFILTER") and nf_span is not None:
        cfg.nf_lo, cfg.nf_hi = nf_span  # type: ignore[attr-defined]
