"""What tc runs on a device: its filters (`tc -j filter show`: pyroute2 does not decode a BPF
filter's program id and tag), the programs tcx attached, and the queueing disciplines with
their statistics (pyroute2 RTM_GETQDISC)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tracer.model.devices import Qdisc, TcProgram
from tracer.system import bpfprogs, netns
from tracer.system.netlink import IPRoute

_TC_H_ROOT = 0xFFFFFFFF


def parse_filters(text: str) -> list[TcProgram]:
    """`tc -j filter show dev X ingress|egress`: a filter's head line carries no options."""
    try:
        rows = json.loads(text or "[]")
    except ValueError:
        return []
    out = []
    for row in rows:
        opts = row.get("options")
        if not opts:
            continue
        prog = opts.get("prog") or {}
        out.append(
            TcProgram(
                "tc",
                str(row.get("kind", "?")),
                prog.get("name"),
                prog.get("id"),
                prog.get("tag"),
                opts.get("bpf_name"),
                row.get("pref"),
            )
        )
    return out


def programs(ns_path: Path, dev: str, direction: str) -> list[TcProgram]:
    """tcx programs (they run first) then tc filters, on dev in one direction."""
    found = parse_filters(
        netns.command(ns_path, "tc", "-j", "filter", "show", "dev", dev, direction)
    )

    def tcx() -> list[TcProgram]:
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=dev)
        out = []
        for prog_id in bpfprogs.tcx_programs(index[0], direction) if index else []:
            name, tag = bpfprogs.prog_info(prog_id) or (None, None)
            out.append(TcProgram("tcx", "bpf", name, prog_id, tag))
        return out

    try:
        attached = netns.run_in(ns_path, tcx)
    except OSError:
        attached = []
    return attached + found


def _handle(value: int) -> str:
    return f"{value >> 16:x}:" + (f"{value & 0xFFFF:x}" if value & 0xFFFF else "")


def _limit(kind: str, options: Any) -> tuple[int | None, str | None]:
    """A qdisc's queue limit where pyroute2 decodes it: (value, packets|bytes)."""
    if options is None or not hasattr(options, "get_attr"):
        return None, None
    if kind == "tbf":
        parms = options.get_attr("TCA_TBF_PARMS")
        return (int(parms["limit"]), "bytes") if parms else (None, None)
    for attr, unit in (("TCA_FQ_CODEL_LIMIT", "packets"), ("TCA_FQ_PLIMIT", "packets")):
        value = options.get_attr(attr)
        if value is not None:
            return int(value), unit
    return None, None


def qdiscs(ns_path: Path, dev: str) -> list[Qdisc]:
    def read() -> list[Qdisc]:
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=dev)
            msgs = ipr.get_qdiscs(index=index[0]) if index else []
        out = []
        for m in msgs:
            kind = str(m.get_attr("TCA_KIND"))
            if kind in ("clsact", "ingress"):
                continue  # hold filters; they queue nothing
            limit, unit = _limit(kind, m.get_attr("TCA_OPTIONS"))
            stats2 = m.get_attr("TCA_STATS2")
            queue = stats2.get_attr("TCA_STATS_QUEUE") if stats2 is not None else None
            q: dict[str, int] = dict(queue) if queue is not None else {}
            parent = "root" if m["parent"] == _TC_H_ROOT else _handle(m["parent"])
            out.append(
                Qdisc(
                    kind,
                    _handle(m["handle"]),
                    parent,
                    limit,
                    unit,
                    q.get("qlen", 0),
                    q.get("backlog", 0),
                    q.get("drops", 0),
                    q.get("overlimits", 0),
                )
            )
        return out

    return netns.run_in(ns_path, read)
