"""Which netfilter rule dropped a packet.

nftrace first: the kernel's own trace of the verdict names table, chain and rule handle
(tracer.nftrace). The first drop of a flow, and rules nftrace cannot see (iptables-legacy),
are attributed by counter deltas: iptables-nft and iptables-legacy rules always count,
native nft rules when they have a `counter`, and the DROP/REJECT rule whose counter grew
since the last look is the one. Both backends are read: the drop location (nft_do_chain or
nf_hook_slow) does not tell them apart.
"""

from __future__ import annotations

import time
from pathlib import Path

from tracer.model import Drop, Rule
from tracer.model.evidence import RuleSource
from tracer.nftrace import NfTrace, RuleTexts
from tracer.system.iptables import CountedRule, counted_rules, matches_everything
from tracer.system.netns import NetnsRef

# How often a storm of drops in one namespace re-reads the counters (three commands, tens
# of ms of CPU each): often while the rule is unknown, once a second while the same rule
# keeps being the one.
_REREAD_S = 0.2
_REREAD_KNOWN_S = 1.0
MAX_NAMESPACES = 1024  # namespaces whose counters are kept: pods come and go


def _id(r: CountedRule) -> tuple[str, str, str, str]:
    return (r.rule.family, r.rule.table, r.rule.chain, r.rule.text)


class RuleCounters:
    """Snapshots of DROP/REJECT rule counters per namespace; finds the one that grew."""

    def __init__(self) -> None:
        self._last: dict[int, dict[tuple[str, str, str, str], int]] = {}
        self._taken: dict[int, float] = {}
        self._culprit: dict[int, CountedRule | None] = {}

    def culprit(self, inode: int, ns_path: Path) -> CountedRule | None:
        """The rule that most plausibly dropped the packet just seen in this namespace."""
        wait = _REREAD_KNOWN_S if self._culprit.get(inode) is not None else _REREAD_S
        if time.monotonic() - self._taken.get(inode, 0.0) < wait and inode in self._last:
            return self._culprit.get(inode)
        rules = counted_rules(ns_path)
        if inode not in self._last and len(self._last) >= MAX_NAMESPACES:
            self._last.clear()
            self._taken.clear()
            self._culprit.clear()
        before = self._last.get(inode, {})
        self._last[inode] = {_id(r): r.packets for r in rules}
        self._taken[inode] = time.monotonic()
        grew = [r for r in rules if r.packets > before.get(_id(r), 0)]
        # An iptables-nft rule also shows in the nft listing: its iptables-save form comes first.
        if grew or inode not in self._culprit:
            self._culprit[inode] = grew[0] if grew else None
        return self._culprit[inode]


class RuleFinder:
    """The rule behind a netfilter drop, and how it was found. Owns the nftrace tables it
    adds: close() removes them."""

    def __init__(self) -> None:
        self._trace = NfTrace()
        self._texts = RuleTexts()
        self._counters = RuleCounters()

    def close(self) -> None:
        self._trace.close()

    def find(self, drop: Drop, ref: NetnsRef) -> tuple[Rule, RuleSource] | None:
        traced = self._trace.verdict(drop, ref)
        if traced is not None:
            rule = self._texts.rule(ref.path, traced)
            return rule, RuleSource("nftrace", matches_everything(rule.text))
        counted = self._counters.culprit(drop.netns, ref.path)
        if counted is None:
            return None
        return counted.rule, RuleSource("counters", counted.matches_everything)
