"""The flight recorder's counter baseline: `record` writes the counters of its namespaces as
they were when it started, `dump` reads them again and reconciles the increase with the
recorder's in-kernel counts of traced drops (both since the recording started), `stop`
removes it. A JSON file beside the nftrace state in /run/droptrace (bpffs holds no files).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from tracer.counters.catalog import MIB_NAMES
from tracer.model.counters import Device, NetnsCounters, Reading
from tracer.system import counters, netns
from tracer.system.netns import NetnsNames, NetnsRef

STATE_DIR = Path("/run/droptrace")


def path_for(pin_dir: Path) -> Path:
    """One baseline per recorder pin directory (tests and benchmarks pin elsewhere)."""
    return STATE_DIR / f"recorder-counters-{pin_dir.name}.json"


def save(path: Path, reading: Reading, scope: list[NetnsRef] | None) -> None:
    """Write the baseline, readable by root only, through a new file renamed into place."""
    doc: dict[str, Any] = {
        "scope": None if scope is None else [[r.inode, r.name, str(r.path)] for r in scope],
        "softnet": reading.softnet,
        "namespaces": [
            {
                "inode": ns.inode,
                "name": ns.name,
                "mibs": ns.mibs,
                "devices": [[d.ifindex, d.counts, d.qdisc] for d in ns.devices],
            }
            for ns in reading.namespaces.values()
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def load(path: Path) -> tuple[Reading, list[NetnsRef] | None] | None:
    """The baseline and the namespaces it covers (None: every one), or None if there is none
    (a recorder started by a droptrace before this one)."""
    try:
        doc = json.loads(path.read_text())
        namespaces = {
            int(ns["inode"]): NetnsCounters(
                int(ns["inode"]),
                str(ns["name"]),
                {str(k): int(v) for k, v in ns["mibs"].items()},
                tuple(
                    Device(int(i), {str(k): int(v) for k, v in c.items()}, q)
                    for i, c, q in ns["devices"]
                ),
            )
            for ns in doc["namespaces"]
        }
        softnet = {str(k): int(v) for k, v in doc["softnet"].items()}
        scope = doc["scope"]
        refs = None if scope is None else [NetnsRef(int(i), n, Path(p)) for i, n, p in scope]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Reading(0.0, namespaces, softnet), refs


def namespaces(scope: list[NetnsRef] | None) -> tuple[list[NetnsRef], bool]:
    """The namespaces of a scope now (None: the host's and every named one), and whether
    the host-wide softnet_stat belongs to it."""
    if scope is None:
        return NetnsNames().all(), True
    return scope, any(r.path == netns.HOST_NETNS for r in scope)


def record(path: Path, scope: list[NetnsRef] | None) -> None:
    """The counters of the recorder's namespaces now, as its baseline."""
    refs, host_wide = namespaces(scope)
    save(path, counters.read(refs, MIB_NAMES, host_wide), scope)


def remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
