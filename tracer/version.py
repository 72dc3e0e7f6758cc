"""`droptrace --version`: the package's version and the build id of the BPF object it loads.

The build id is recorded by `make bpf` (bpf_dir()/build-id: a hash of the objects, their
names, the compiler): clang writes no ELF build-id note into a BPF object. It is checked
against the objects as they are now, so an object changed after the build is said to be.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from tracer.hooks import bpf_dir

BUILD_ID_FILE = "build-id"
_ID_LEN = 16  # hex digits of the sha256, as the Makefile cuts it


def package_version() -> str:
    try:
        return metadata.version("droptrace")
    except metadata.PackageNotFoundError:
        return "(not installed: run from a checkout)"


def _recorded(where: Path) -> dict[str, str]:
    """The build-id file's `key value` lines."""
    lines = (where / BUILD_ID_FILE).read_text().splitlines()
    return dict(line.split(" ", 1) for line in lines if " " in line)


def _digest(objects: list[Path]) -> str:
    h = hashlib.sha256()
    for obj in objects:
        h.update(obj.read_bytes())
    return h.hexdigest()[:_ID_LEN]


def bpf_build() -> str:
    """One phrase: the objects' build id and what built them, or what is missing."""
    where = bpf_dir()
    try:
        info = _recorded(where)
    except OSError:
        info = {}
    names = info.get("objects", "").split() or sorted(p.name for p in where.glob("*.bpf.o"))
    objects = [where / name for name in names]
    if not objects or not all(o.is_file() for o in objects):
        return f"no BPF object in {where} (build it with `make bpf`)"
    now = _digest(objects)
    recorded = info.get("build_id")
    built = ", ".join(filter(None, (" ".join(names), info.get("compiler"))))
    if recorded is None:
        return f"BPF build id {now} ({built}; not recorded at build time)"
    if recorded != now:
        return f"BPF build id {now} ({built}; the build recorded {recorded}: changed since)"
    return f"BPF build id {recorded} ({built})"


def describe() -> str:
    return f"droptrace {package_version()}, {bpf_build()}"
