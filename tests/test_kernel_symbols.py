"""Kernel addresses are named from the running kernel's /proc/kallsyms (as root)."""

from __future__ import annotations

import bisect
import random
import re
from pathlib import Path

import pytest

from tracer.system.kernel import KernelSymbols

pytestmark = pytest.mark.root

_LINE = re.compile(rb"^([0-9a-f]+) ([tTwW]) (\S+)", re.MULTILINE)


def test_names_match_a_full_parse_of_kallsyms(tmp_path: Path) -> None:
    """Every way an address can fall: a symbol's start, inside it, between data symbols,
    in a module; checked against the obvious parse of the whole file."""
    data = Path("/proc/kallsyms").read_bytes()
    table = sorted((int(m[1], 16), m[3].decode()) for m in _LINE.finditer(data))
    table = [t for t in table if t[0]]
    assert len(table) > 10_000, "kallsyms shows no addresses: not root?"
    addrs = [a for a, _ in table]
    rng = random.Random(7)
    probes = [a for a, _ in rng.sample(table, 300)]
    probes += [a + rng.randrange(1, 64) for a in probes]
    probes += [rng.randrange(addrs[0], addrs[-1]) for _ in range(300)]
    symbols = KernelSymbols()
    for addr in probes:
        i = bisect.bisect_right(addrs, addr) - 1
        # Several names share an address (aliases): any of them is right.
        same = {n for a, n in table if a == addrs[i]}
        assert symbols.name(addr) in same, hex(addr)
    assert symbols.name(1).startswith("0x")  # below every symbol
