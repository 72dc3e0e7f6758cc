"""DROP/REJECT rules with their packet counters, parsed from `iptables-save -c` and
`nft -a list ruleset`, and the reading of them inside a namespace."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tracer.model import Rule
from tracer.system import netns

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


# Each iptables-save of the namespace, with the family its rules are named with.
SAVES = (
    ("iptables-nft-save", "ipv4"),
    ("iptables-legacy-save", "ipv4 legacy"),
    ("ip6tables-nft-save", "ipv6"),
    ("ip6tables-legacy-save", "ipv6 legacy"),
)


def counted_rules(ns_path: Path) -> list[CountedRule]:
    """Every DROP/REJECT rule of the namespace with its counter, in both iptables backends
    (IPv4 and IPv6) and native nft. iptables-nft first: its rules show again in the nft
    listing, in a less familiar form."""
    saved = [parse_iptables_save(netns.command(ns_path, cmd, "-c"), f) for cmd, f in SAVES]
    return [r for rules in saved for r in rules] + parse_nft(
        netns.command(ns_path, "nft", "-a", "list", "ruleset")
    )
