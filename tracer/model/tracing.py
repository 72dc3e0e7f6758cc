"""What a tracing run is given and what it reports: filters, counters, hooks, the summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tracer.model.counters import CounterEvent, CounterMove
from tracer.model.drop import AttributedDrop, Drop
from tracer.model.net import Network


@dataclass(frozen=True, slots=True)
class Filters:
    """What the kernel side lets through; empty means everything."""

    netns: tuple[int, ...] = ()
    networks: tuple[Network, ...] = ()
    reasons: tuple[int, ...] = ()
    ifindex: int = 0
    ignore: tuple[tuple[int, int], ...] = ()  # [start, end) code ranges that free non-packets
    nf_span: tuple[int, int] | None = None  # nf_hook_slow's code; None: read from kallsyms


@dataclass(frozen=True, slots=True)
class CounterKey:
    """One in-kernel counter: drops per (location, reason, interface, namespace)."""

    location: int
    reason: int
    ifindex: int
    netns: int


def counter_key(drop: Drop) -> CounterKey:
    """The in-kernel counter a drop was counted in."""
    return CounterKey(drop.location, drop.reason, drop.ifindex, drop.netns)


@dataclass(frozen=True, slots=True)
class Stats:
    matched: int
    lost: int
    uncounted: int
    suppressed: int = 0


@dataclass(frozen=True, slots=True, order=True)
class KeyLabels:
    """A counter key in words, as its drops were (or, unexplained, its reason is) attributed."""

    reason: str
    category: str
    iface: str
    namespace: str = ""  # the local pod's, for metrics
    pod: str = ""

    @classmethod
    def of(cls, item: AttributedDrop) -> KeyLabels:
        """A counter key's labels from one of its drops, explained."""
        pod = item.facts.local_pod
        return cls(
            item.facts.reason,
            str(item.diagnosis.category),
            item.facts.iface or "",
            pod.namespace if pod else "",
            pod.name if pod else "",
        )


class HookState(StrEnum):
    ACTIVE = "active"
    REFUSED = "refused"  # the kernel or the environment refused it
    NOT_NEEDED = "not needed"  # a cause hook where kfree_skb gives reasons


@dataclass(frozen=True, slots=True)
class HookStatus:
    hook: str  # as shown to users: tp_btf/kfree_skb, fexit/nf_hook_slow...
    state: HookState
    why: str = ""
    cause: bool = False  # one of the cause hooks (kernels without drop reasons)

    def line(self) -> str:
        return f"{self.hook}: {self.why}" if self.why else self.hook


@dataclass(slots=True)
class HookReport:
    """Every hook droptrace tried, in the order it tried them."""

    hooks: list[HookStatus] = field(default_factory=list)
    kernel_reasons: bool = True  # kfree_skb gives reasons: cause hooks are optional here

    @property
    def active(self) -> list[str]:
        return [h.hook for h in self.hooks if h.state is HookState.ACTIVE]

    @property
    def unavailable(self) -> list[str]:
        """Lines for hooks the user misses: kfree_skb variants the kernel refused, and cause
        hooks where the kernel gives no reasons (there they are what names a drop)."""
        return [
            h.line()
            for h in self.hooks
            if h.state is not HookState.ACTIVE and not (h.cause and self.kernel_reasons)
        ]

    @property
    def optional(self) -> list[str]:
        """Lines for cause hooks not attached: only kernels without drop reasons need them."""
        return [h.line() for h in self.hooks if h.cause and h.state is not HookState.ACTIVE]


@dataclass(frozen=True, slots=True)
class Summary:
    seconds: float
    shown: int
    totals: dict[str, int]  # reason -> exact count from the in-kernel counters
    matched: int
    lost: int
    uncounted: int
    interrupted: bool
    suppressed: int = 0  # held back by the per-flow rate limit (in the totals, not shown)
    by_netns: dict[int, dict[str, int]] = field(default_factory=dict)  # inode -> reason -> n
    hidden: int = 0  # explained as benign noise, not shown without --all
    unexplained: int = 0  # of `lost`: read, but the session ended before they were explained
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # droptrace's own, by thread
    # The kernel's own drop counters over the session, next to the traced drops (reconciled),
    # and what the tracepoint did not see, explained; `counters_note` says what limits them.
    counters: tuple[CounterMove, ...] = ()
    untraced: tuple[CounterEvent, ...] = ()
    counters_note: str = ""

    def accounting(self) -> str:
        """Where every counted drop went, in words (the totals stay exact either way)."""
        return (
            f"{self.shown} shown, {self.lost} lost events, {self.suppressed} suppressed by the"
            f" rate limit{self.accounting_more()}"
        )

    def accounting_more(self) -> str:
        """The parts of the accounting that are there only when not zero."""
        text = f", {self.hidden} hidden as noise (--all shows them)" if self.hidden else ""
        if self.unexplained:
            text += f"; {self.unexplained} of the lost were read but not explained in time"
        return text

    def counter_lines(self) -> list[str]:
        """The kernel's counters over the session in lines of text: each namespace's next to
        the traced drops, then what the tracepoint did not see, explained."""
        lines: list[str] = []
        by_netns: dict[str, list[str]] = {}
        for m in self.counters:
            by_netns.setdefault(m.netns, []).append(m.line())
        for netns, moved in by_netns.items():
            lines.append(f"kernel counters in {netns}: " + "; ".join(moved))
        if self.untraced:
            lines.append("not seen by the tracepoint (counted by the kernel only):")
            for e in self.untraced:
                lines.append(f"  {e.explanation}")
                if e.fix:
                    lines.append(f"    fix: {e.fix}")
        if self.counters_note:
            lines.append(self.counters_note)
        return lines

    def to_json(self) -> dict[str, object]:
        """The summary as a JSON-ready object (--summary-json): what a script compares."""
        return {
            "seconds": round(self.seconds, 3),
            "shown": self.shown,
            "matched": self.matched,
            "lost": self.lost,
            "uncounted": self.uncounted,
            "suppressed": self.suppressed,
            "hidden": self.hidden,
            "unexplained": self.unexplained,
            "totals": self.totals,
            "by_netns": {str(k): v for k, v in self.by_netns.items()},
            "interrupted": self.interrupted,
            "cpu_seconds": {k: round(v, 3) for k, v in self.cpu_seconds.items()},
            "kernel_counters": [m.json() | {"primary": m.primary} for m in self.counters],
            "not_traced": [e.json() for e in self.untraced],
        }
