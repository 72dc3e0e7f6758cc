"""Which netfilter rule dropped a packet: per-rule counter deltas in the drop's namespace.

iptables-nft and iptables-legacy rules always count; native nft rules count when they have a
`counter`. The DROP/REJECT rule whose counter grew since the last look is the one. Both
backends are read: the drop location (nft_do_chain or nf_hook_slow) does not tell them apart.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from tracer.enrich import netns
from tracer.model import Rule

_SAVE_RULE = re.compile(r"^\[(\d+):\d+\] -A (\S+) (.*)$")
_COMMENT = re.compile(r'--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))')
_COMMENT_MATCH = re.compile(r"(?:-m comment )?" + _COMMENT.pattern)
_NFT_RULE = re.compile(r"^\s+(.*?) # handle (\d+)$")
_NFT_COUNTER = re.compile(r"counter packets (\d+)")
_NFT_COMMENT = re.compile(r'comment "([^"]*)"')


@dataclass(frozen=True, slots=True)
class CountedRule:
    rule: Rule
    packets: int
    matches_everything: bool  # no match at all before its verdict


def comment_of(spec: str) -> str | None:
    """The `-m comment --comment` text of an iptables rule."""
    c = _COMMENT.search(spec)
    return (c.group(1) or c.group(2)) if c else None


def matches_everything(saved: str) -> bool | None:
    """Whether an `-A CHAIN ... -j DROP|REJECT` rule has no match before its verdict."""
    m = re.match(r"-A \S+ (.*?)-j (?:DROP|REJECT)\b", saved)
    if not m:
        return None
    return not _COMMENT_MATCH.sub("", m.group(1)).strip()


def parse_iptables_save(text: str, family: str) -> list[CountedRule]:
    """DROP/REJECT rules of `iptables-save -c` output, with their packet counters."""
    out, table = [], ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        m = _SAVE_RULE.match(line)
        if not m:
            continue
        packets, chain, spec = int(m.group(1)), m.group(2), m.group(3)
        verdict = re.search(r"-j (DROP|REJECT)\b", spec)
        if not verdict:
            continue
        text_form = f"-A {chain} {spec}"
        out.append(
            CountedRule(
                Rule(family, table, chain, text_form, None, comment_of(spec)),
                packets,
                matches_everything(text_form) is True,
            )
        )
    return out


def parse_nft(text: str) -> list[CountedRule]:
    """drop/reject rules with a counter from `nft -a list ruleset`."""
    out, family, table, chain = [], "", "", ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("table "):
            _, family, table = stripped.split()[:3]
            continue
        if stripped.startswith("chain "):
            chain = stripped.split()[1]
            continue
        m = _NFT_RULE.match(line)
        if not m:
            continue
        body, handle = m.group(1), int(m.group(2))
        counter = _NFT_COUNTER.search(body)
        verdict = re.search(r"\b(drop|reject)\b", body)
        if not counter or not verdict:
            continue
        c = _NFT_COMMENT.search(body)
        matches = body[: counter.start()].strip()
        out.append(
            CountedRule(
                Rule(f"nft {family}", table, chain, body, handle, c.group(1) if c else None),
                int(counter.group(1)),
                not matches,
            )
        )
    return out


def _id(r: CountedRule) -> tuple[str, str, str, str]:
    return (r.rule.family, r.rule.table, r.rule.chain, r.rule.text)


class RuleCounters:
    """Snapshots of DROP/REJECT rule counters per namespace; finds the one that grew."""

    def __init__(self) -> None:
        self._last: dict[int, dict[tuple[str, str, str, str], int]] = {}
        self._taken: dict[int, float] = {}
        self._culprit: dict[int, CountedRule | None] = {}

    @staticmethod
    def _read(ns_path: Path) -> list[CountedRule]:
        # iptables-nft first: its rules show again in the nft listing, in a less familiar form.
        return (
            parse_iptables_save(netns.command(ns_path, "iptables-nft-save", "-c"), "ipv4")
            + parse_iptables_save(
                netns.command(ns_path, "iptables-legacy-save", "-c"), "ipv4 legacy"
            )
            + parse_nft(netns.command(ns_path, "nft", "-a", "list", "ruleset"))
        )

    def culprit(self, inode: int, ns_path: Path) -> CountedRule | None:
        """The rule that most plausibly dropped the packet just seen in this namespace."""
        # A storm of drops re-reads at most a few times a second.
        if time.monotonic() - self._taken.get(inode, 0.0) < 0.2 and inode in self._last:
            return self._culprit.get(inode)
        rules = self._read(ns_path)
        before = self._last.get(inode, {})
        self._last[inode] = {_id(r): r.packets for r in rules}
        self._taken[inode] = time.monotonic()
        grew = [r for r in rules if r.packets > before.get(_id(r), 0)]
        # An iptables-nft rule also shows in the nft listing: its iptables-save form comes first.
        if grew or inode not in self._culprit:
            self._culprit[inode] = grew[0] if grew else None
        return self._culprit[inode]
