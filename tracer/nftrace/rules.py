"""The text of a traced rule: its nft form, or the iptables-save form iptables-nft wrote."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tracer.model import Rule
from tracer.nftrace.codec import Verdict
from tracer.system import netns
from tracer.system.iptables import comment_of

MAX_ENTRIES = 1024  # rule texts cached at most (per namespace and rule)
_IPTABLES_FAMILY = {"ip": ("iptables-nft-save", "ipv4"), "ip6": ("ip6tables-nft-save", "ipv6")}


class RuleTexts:
    """Rule text for a traced (family, table, chain, handle), from the namespace's ruleset.

    A rule iptables-nft wrote is given in its iptables-save form: the chain's rules are in
    the same order in both listings, so the handle's position finds the line.
    """

    _HANDLE = re.compile(r"^\s+(.*?) # handle (\d+)$")

    def __init__(self) -> None:
        self._cache: dict[tuple[object, ...], tuple[float, Rule]] = {}

    def rule(self, ns_path: Path, v: Verdict) -> Rule:
        key = (str(ns_path), v.family, v.table, v.chain, v.handle)
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < 2.0:
            return hit[1]
        rule = self._read(ns_path, v)
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), rule)
        return rule

    def _read(self, ns_path: Path, v: Verdict) -> Rule:
        listing = netns.command(ns_path, "nft", "-a", "list", "chain", v.family, v.table, v.chain)
        handles, bodies = [], {}
        policy = ""
        for line in listing.splitlines():
            m = self._HANDLE.match(line)
            if m and not line.lstrip().startswith(("table ", "chain ")):
                handles.append(int(m.group(2)))
                bodies[int(m.group(2))] = m.group(1)
            elif "policy" in line:
                policy = line.strip().rstrip(";")
        if v.handle is None:
            return Rule(f"nft {v.family}", v.table, v.chain, policy or "policy drop", None, None)
        saved = self._iptables_form(ns_path, v, handles)
        if saved is not None:
            return saved
        body = bodies.get(v.handle, f"rule handle {v.handle}")
        comment = re.search(r'comment "([^"]*)"', body)
        return Rule(
            f"nft {v.family}",
            v.table,
            v.chain,
            body,
            v.handle,
            comment.group(1) if comment else None,
        )

    @staticmethod
    def _iptables_form(ns_path: Path, v: Verdict, handles: list[int]) -> Rule | None:
        if v.family not in _IPTABLES_FAMILY or v.handle not in handles:
            return None
        tool, family = _IPTABLES_FAMILY[v.family]
        save = netns.command(ns_path, tool, "-t", v.table)
        lines = [ln for ln in save.splitlines() if ln.startswith(f"-A {v.chain} ")]
        if len(lines) != len(handles):
            return None  # not (only) iptables-nft's rules: keep the nft form
        line = lines[handles.index(v.handle)]
        return Rule(family, v.table, v.chain, line, v.handle, comment_of(line))
