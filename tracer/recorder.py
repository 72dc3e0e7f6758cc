"""The flight recorder: programs and maps pinned in bpffs, recording after the CLI exits.

`record` loads and pins; `dump`/`status` open the pins read-only and leave the recorder
running; `stop` removes the pins, which detaches the program and frees the maps.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tracer import abi, libbpf
from tracer.counters import baseline
from tracer.errors import DroptraceError
from tracer.events import record_type
from tracer.hooks import (
    CAPTURE_BYTES,
    DEFAULT_CAUSE_RATE,
    KFREE_SKB_VARIANTS,
    DropTracer,
    read_totals,
)
from tracer.model.tracing import CounterKey, Filters, Stats
from tracer.system.netns import NetnsRef

# DROPTRACE_PIN_DIR: another place in bpffs, so a benchmark or test run never touches the
# recorder a person left running.
PIN_DIR = Path(os.environ.get("DROPTRACE_PIN_DIR") or "/sys/fs/bpf/droptrace")
MAPS = ("counters", "counter_slots", "stats", "recorder", "rec_head", "dt_config_map")
DEFAULT_SLOTS = 4096
# Packet bytes kept with each recorded drop, for `dump --pcap`: all the kernel keeps
# unless `record --capture-bytes` says fewer (0: none, and no probe read per drop).
DEFAULT_CAPTURE = CAPTURE_BYTES


class RecorderRunning(DroptraceError):
    exit_code = 1


class NoRecorder(DroptraceError):
    exit_code = 1


@dataclass(frozen=True, slots=True)
class Recording:
    started_ns: int
    hook: str
    slots: int
    events: list[bytes]  # oldest first, at most `slots`
    counters: dict[CounterKey, int]
    stats: Stats
    netns_filter: bool
    capture_len: int  # packet bytes kept with each drop (0: none)
    cause_rate: int = 0  # drops of one cause kept per second per CPU (0: all)


class RecorderMismatch(DroptraceError):
    exit_code = 1


class RecorderBusy(DroptraceError):
    exit_code = 1


@contextmanager
def _exclusive() -> Iterator[None]:
    """One `record` or `stop` at a time: a second one started meanwhile fails at once and
    touches nothing (it would otherwise find the first's pins half made, and remove them).
    The lock is on the bpffs directory holding the pins, which every caller has."""
    fd = os.open(PIN_DIR.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecorderBusy(
                "another `droptrace record` or `stop` is running right now: try again"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def running() -> bool:
    return (PIN_DIR / "link").exists()


def _clear() -> None:
    shutil.rmtree(PIN_DIR, ignore_errors=True)


def start(
    filters: Filters,
    slots: int = DEFAULT_SLOTS,
    kernel_reasons: bool = False,
    counted: list[NetnsRef] | None = None,
    cause_rate: int = DEFAULT_CAUSE_RATE,
    capture_len: int = DEFAULT_CAPTURE,
) -> list[str]:
    """Load, attach and pin a recorder; returns notes (e.g. stale pins replaced).
    kernel_reasons: kfree_skb gives drop reasons here (then no cause hooks are attached);
    counted: the namespaces whose drop counters `dump` compares (None: every one);
    cause_rate: drops of one cause kept per second per CPU (0: all), so a flood of one
    cause does not overwrite the rarer drops before it within a second; capture_len: packet
    bytes kept with each drop (0: none)."""
    with _exclusive():
        notes = _start(filters, slots, kernel_reasons, cause_rate, capture_len)
        try:  # after the hooks: a drop before the baseline is traced, never only counted
            baseline.record(baseline.path_for(PIN_DIR), counted)
        except OSError as err:
            notes.append(f"kernel drop counters not recorded: {err}")
        return notes


def _start(
    filters: Filters, slots: int, kernel_reasons: bool, cause_rate: int, capture_len: int
) -> list[str]:
    notes = []
    if running():
        since = read().started_ns
        raise RecorderRunning(
            f"a flight recorder is already running (since {_fmt(since)}): `droptrace stop` first"
        )
    if PIN_DIR.exists():
        _clear()
        notes.append(f"removed stale pins of a crashed recorder in {PIN_DIR}")
    PIN_DIR.mkdir(parents=True)
    try:
        with DropTracer(
            filters,
            ring_bytes=4096,
            record_slots=slots,
            stream=False,
            kernel_reasons=kernel_reasons,
            cause_limit=cause_rate,
            capture_len=capture_len,
        ) as tracer:
            tracer.pin(PIN_DIR, MAPS)
            notes.extend(f"hook unavailable: {u}" for u in tracer.hooks.unavailable)
            packets = f"their first {capture_len} bytes" if capture_len else "no packet bytes"
            active = ", ".join(tracer.hooks.active)
            notes.append(f"recording with {active}, {slots} drops kept with {packets}")
    except BaseException:
        _clear()
        raise
    return notes


def stop() -> bool:
    """Detach and unpin everything; False if nothing was recording."""
    with _exclusive():
        was = PIN_DIR.exists()
        _clear()
        baseline.remove(baseline.path_for(PIN_DIR))
        return was


def _fmt(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def read() -> Recording:
    """Everything the recorder holds, without stopping it."""
    if not running():
        raise NoRecorder("no flight recorder is running: start one with `droptrace record`")
    ncpu = libbpf.num_possible_cpus()
    record_t = record_type()
    with ExitStack() as stack:
        maps = _open_pins(stack, record_t)
        cfg = abi.struct("dt_config")()
        maps["dt_config_map"].lookup(ctypes.c_uint32(0), cfg)
        slots = int(cfg.record_slots)  # type: ignore[attr-defined]
        raw: list[bytes] = []
        values = (record_t * ncpu)()
        for slot in range(slots):
            if not maps["recorder"].lookup(ctypes.c_uint32(slot), values):
                continue
            raw.extend(bytes(v) for v in values if v.ev.ts_ns)  # type: ignore[attr-defined]
        # Newest `slots` over all CPUs, oldest first.
        raw.sort(key=lambda b: record_t.from_buffer_copy(b).ev.ts_ns)  # type: ignore[attr-defined]
        raw = raw[-slots:]
        counters, stats = read_totals(maps["stats"], maps["counters"], maps["counter_slots"])
        return Recording(
            started_ns=int(cfg.started_ns),  # type: ignore[attr-defined]
            hook=KFREE_SKB_VARIANTS[int(cfg.hook)][0],  # type: ignore[attr-defined]
            slots=slots,
            events=raw,
            counters=counters,
            stats=stats,
            netns_filter=bool(cfg.filter_netns),  # type: ignore[attr-defined]
            cause_rate=int(cfg.cause_limit),  # type: ignore[attr-defined]
            capture_len=int(cfg.capture_len),  # type: ignore[attr-defined]
        )


_ANOTHER_VERSION = (
    "the flight recorder was started by another version of droptrace ({why}): "
    "`droptrace stop`, then `droptrace record` again"
)


def _open_pins(stack: ExitStack, record_t: type[ctypes.Structure]) -> dict[str, libbpf.Map]:
    """The recorder's pinned maps, checked against this droptrace's layout: a recorder left
    running across an upgrade has other maps or other slot sizes, and would be misread."""
    maps = {}
    for name in MAPS:
        try:
            maps[name] = stack.enter_context(libbpf.PinnedMap(PIN_DIR / name)).map
        except FileNotFoundError:
            raise RecorderMismatch(_ANOTHER_VERSION.format(why=f"it has no map {name}")) from None
    expected = {
        "recorder": ctypes.sizeof(record_t),
        "counter_slots": ctypes.sizeof(abi.struct("counter_slot")),
        "dt_config_map": ctypes.sizeof(abi.struct("dt_config")),
    }
    for name, size in expected.items():
        got = libbpf.value_size(maps[name])
        if got != size:
            why = f"its {name} values are {got} bytes, this version's {size}"
            raise RecorderMismatch(_ANOTHER_VERSION.format(why=why))
    return maps


def status_line() -> str:
    """`droptrace status`: whether a recorder runs, since when, and what it counted."""
    if not running():
        return "no flight recorder is running"
    rec = read()
    return (
        f"recording since {_fmt(rec.started_ns)} with {rec.hook}: {rec.stats.matched} drops"
        f" counted, {len(rec.events)} of {rec.slots} slots filled"
    )
