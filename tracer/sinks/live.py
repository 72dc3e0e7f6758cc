"""The live terminal view: a scrolling table of drops and a per-reason tally (rich)."""

from __future__ import annotations

from collections import Counter, deque

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tracer.model import AttributedDrop, proto_name
from tracer.model.counters import CounterEvent
from tracer.model.tracing import HookReport, Summary

_ROWS = 20


def _endpoint(addr: object, port: int | None, pod: str | None = None) -> str:
    if addr is None:
        return "-"
    text = f"{addr}:{port}" if port is not None else str(addr)
    return f"{text} ({pod})" if pod else text


class LiveView:
    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console()
        self._status = Console(stderr=True)  # start-up notes never mix with the drop table
        self._recent: deque[AttributedDrop] = deque(maxlen=_ROWS)
        self._tally: Counter[str] = Counter()
        self._live: Live | None = None

    def _render(self) -> Group:
        drops = Table(title="drops (newest last)", expand=True, title_justify="left")
        for col in ("time", "reason", "where", "flow", "explanation"):
            drops.add_column(col, overflow="fold")
        for item in self._recent:
            drops.add_row(*_row(item))
        tally = Table(title="per reason", title_justify="left")
        tally.add_column("reason")
        tally.add_column("shown", justify="right")
        for reason, n in self._tally.most_common():
            tally.add_row(reason, str(n))
        return Group(drops, tally)

    def start(self, hooks: HookReport) -> None:
        for line in hooks.unavailable:
            self._status.print(f"[yellow]hook unavailable:[/] {line}")
        self._status.print(f"tracing with [bold]{', '.join(hooks.active)}[/]; Ctrl-C to stop")
        if self._console.is_terminal:
            # Rendered 4 times a second from the current state, not once per drop.
            self._live = Live(
                console=self._console, get_renderable=self._render, refresh_per_second=4
            )
            self._live.start()

    def drop(self, item: AttributedDrop) -> None:
        self._recent.append(item)
        self._tally[item.facts.reason] += 1
        if self._live is None:
            self._console.print(" | ".join(_row(item)), soft_wrap=True, highlight=False)

    def flush(self) -> None:
        pass  # the live table redraws on its own clock

    def counter(self, event: CounterEvent) -> None:
        """A kernel counter moved beyond the traced drops: one line above the table."""
        fix = f"\n  fix: {event.fix}" if event.fix else ""
        line = Text.assemble(
            ("kernel counted, not traced: ", "yellow"), f"{event.explanation}{fix}"
        )
        self._console.print(line, soft_wrap=True, highlight=False)

    def finish(self, s: Summary) -> None:
        if self._live is not None:
            self._live.stop()
        table = Table(title=f"summary: {s.matched} drops in {s.seconds:.1f}s", title_justify="left")
        table.add_column("reason")
        table.add_column("total (exact)", justify="right")
        for reason, n in s.totals.items():
            table.add_row(reason, str(n))
        self._console.print(table)
        lost = f"[red]{s.lost}[/]" if s.lost else "0"
        self._console.print(
            f"{s.shown} drops shown, {lost} events lost, {s.suppressed} suppressed by the "
            f"per-flow rate limit{s.accounting_more()} (totals above stay exact)"
        )
        for line in s.counter_lines():
            self._console.print(line, soft_wrap=True, highlight=False, markup=False)


def _row(item: AttributedDrop) -> tuple[str, str, str, str, str]:
    d, f = item.drop, item.facts
    proto = proto_name(d.l4proto) or "-"
    src, dst = _endpoint(d.src, d.sport, f.src_pod), _endpoint(d.dst, d.dport, f.dst_pod)
    flow = f"{proto} {src} > {dst}"
    if f.svc:
        flow += f" svc {f.svc}"
    where = f"{f.iface or '?'}@{f.netns} {f.location}"
    return (f.time.strftime("%H:%M:%S.%f")[:-3], f.reason, where, flow, item.diagnosis.explanation)
