"""The bug report: one JSON document, rendered as Markdown; optionally redacted for posting."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

_V4 = r"\d{1,3}(?:\.\d{1,3}){3}"
# Anything that may be an address: IPv4, IPv6 (also IPv4-mapped, ::ffff:a.b.c.d). It may be
# followed by ":PORT", "/LEN" or a full stop: what follows is no part of the address.
_IP_CANDIDATE = re.compile(
    rf"(?<![\w.:])(?:(?:[0-9A-Fa-f]{{0,4}}:){{2,7}}(?:{_V4}|[0-9A-Fa-f]{{0,4}})|{_V4})(?![\w]|\.\d)"
)


def _address(text: str) -> str | None:
    """The address a candidate is, in its canonical text (an IPv4-mapped IPv6 address as
    the IPv4 address it is), or None."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
    return str(mapped or addr)


class Redactor:
    """Replaces addresses and pod names with stable placeholders (same value, same name).

    Structural, not a pattern over finished text alone: every address found anywhere in the
    document (fields, evidence, rule texts) is collected first, with the other spellings
    the kernel and tools use for it (IPv4-mapped IPv6), and each is replaced wherever it
    stands, also as ADDR:PORT, ADDR/LEN or at the end of a sentence."""

    def __init__(self) -> None:
        self._ips: dict[str, str] = {}  # canonical address -> placeholder
        self._spellings: dict[str, str] = {}  # any spelling -> placeholder
        self._names: dict[str, str] = {}
        self._known: re.Pattern[str] | None = None

    def learn(self, text: str) -> None:
        """Collect every address in `text`."""
        for m in _IP_CANDIDATE.finditer(text):
            canonical = _address(m.group(0))
            if canonical is None:
                continue
            placeholder = self._ips.setdefault(canonical, f"ip-{len(self._ips) + 1}")
            addr = ipaddress.ip_address(canonical)
            spellings = {m.group(0), canonical, addr.exploded}
            if addr.version == 4:
                mapped = ipaddress.IPv6Address(f"::ffff:{canonical}")
                spellings |= {f"::ffff:{canonical}", str(mapped), mapped.exploded}
            for spelling in spellings:
                self._spellings.setdefault(spelling, placeholder)
        self._known = None

    def number(self, addr: str) -> int:
        """The number of an address's placeholder (ip-N), the same as in the text."""
        canonical = _address(addr) or addr
        return int(self._ips.setdefault(canonical, f"ip-{len(self._ips) + 1}")[3:])

    def name(self, value: str) -> str:
        return self._names.setdefault(value, f"pod-{len(self._names) + 1}")

    def text(self, value: str) -> str:
        for real, placeholder in self._names.items():
            value = value.replace(real, placeholder)
        if self._spellings:
            if self._known is None:
                alternatives = sorted(self._spellings, key=len, reverse=True)
                self._known = re.compile(
                    r"(?<![\w.:])(?:" + "|".join(map(re.escape, alternatives)) + r")(?![\w]|\.\d)"
                )
            value = self._known.sub(lambda m: self._spellings[m.group(0)], value)
        return _IP_CANDIDATE.sub(self._unknown, value)

    def _unknown(self, m: re.Match[str]) -> str:
        """A spelling not learnt: redacted all the same if it is an address."""
        canonical = _address(m.group(0))
        if canonical is None:
            return m.group(0)
        return self._ips.setdefault(canonical, f"ip-{len(self._ips) + 1}")

    def doc(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self.doc(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.doc(v, key) for v in value]
        if isinstance(value, str):
            if key in _NAMED:
                return self.name(value)
            return self.text(value)
        return value


_NAMED = ("src_pod", "dst_pod", "svc", "pod", "hostname")  # keys whose values are names


def _names(value: Any) -> list[str]:
    """Every pod or service name anywhere in the document (a drop's ends, a socket's owner)."""
    if isinstance(value, dict):
        here = [v for k, v in value.items() if k in _NAMED[:-1] and isinstance(v, str) and v]
        return here + [n for v in value.values() for n in _names(v)]
    if isinstance(value, list):
        return [n for v in value for n in _names(v)]
    return []


def redactor(doc: Any, hostnames: tuple[str, ...] = ()) -> Redactor:
    """A Redactor that knows every address and name in `doc` (any JSON value)."""
    r = Redactor()
    r.learn(json.dumps(doc))
    # Pod and host names first, so they are also replaced where they appear in free text.
    for name in _names(doc):
        r.name(name)
    for host in hostnames:
        r.name(host)
    return r


def redact(doc: dict[str, Any]) -> dict[str, Any]:
    hostname = doc.get("host", {}).get("hostname")
    out: dict[str, Any] = redactor(doc, (hostname,) if hostname else ()).doc(doc)
    return out


def to_markdown(doc: dict[str, Any]) -> str:
    host, rec = doc["host"], doc["recorder"]
    lines = [
        "# droptrace report",
        "",
        f"Generated {doc['generated']} on `{host['hostname']}`; recording since {rec['since']}"
        f" with `{rec['hook']}`, keeping the newest {rec['slots']} drops.",
        "",
        "## Host",
        "",
        f"- kernel: `{host['kernel']['release']}` ({host['kernel']['machine']})",
        f"- hooks active: {', '.join(host['hooks_active'])}",
        f"- iptables: `{host['iptables'] or 'not installed'}`",
        f"- nft ruleset digest (sha256, host namespace): `{host['nft_ruleset_sha256'] or 'none'}`",
        "",
        "## Drops per reason (exact, in-kernel counters)",
        "",
        "| reason | location | iface | netns | count |",
        "|---|---|---|---|---|",
    ]
    for c in doc["counters"]:
        cells = (c["reason"], c["location"], c["iface"] or "-", c["netns"], c["count"])
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    lines += [
        "",
        f"Total {doc['totals']['matched']} drops; {len(doc['drops'])} kept in the recorder"
        + _held(doc)
        + ".",
        *_kernel_counters(doc),
        "",
        "## Drops, explained (newest last)",
        "",
    ]
    for d in doc["drops"]:
        flow = f"{d['proto'] or '-'} {d['src']}:{d['sport']} > {d['dst']}:{d['dport']}"
        pods = ""
        if d.get("src_pod") or d.get("dst_pod"):
            pods = f" (pods {d.get('src_pod') or '-'} > {d.get('dst_pod') or '-'})"
        lines.append(
            f"- `{d['time']}` **{d['category']}** `{d['reason']}` at `{d['location']}`"
            f" on {d['iface'] or '?'}@{d['netns']}: {flow}{pods}"
        )
        lines.append(f"  - {d['explanation']}")
        if d.get("fix"):
            lines.append(f"  - fix: {d['fix']}")
        if d.get("rule"):
            lines.append(
                f"  - rule: `{d['rule']['text']}` ({d['rule']['family']} {d['rule']['table']})"
            )
    lines += ["", "## Sysctls at dump time", ""]
    for ns, values in doc["sysctls"].items():
        lines.append(f"### netns {ns}")
        lines.append("")
        lines.append("```")
        lines.extend(f"{k} = {'-' if v is None else v}" for k, v in values.items())
        lines.append("```")
        lines.append("")
    return "\n".join(lines) + "\n"


def _held(doc: dict[str, Any]) -> str:
    """The drops a flood of their cause kept out of the recorder (counted all the same)."""
    held, rate = doc["totals"].get("held", 0), doc["recorder"].get("cause_rate", 0)
    if not held:
        return ""
    return f"; {held} counted only, over their cause's {rate} a second (per CPU)"


def _kernel_counters(doc: dict[str, Any]) -> list[str]:
    """The kernel's own counters since recording started, next to the traced drops; then
    what the tracepoint did not see."""
    moved = doc.get("kernel_counters") or []
    if not moved:
        return []
    lines = [
        "",
        "## Kernel drop counters since recording started",
        "",
        "| counter | netns | iface | counted | traced | as reasons | not traced |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in moved:
        name = c["counter"] if c.get("primary", True) else f"{c['counter']} (a sum)"
        reasons = ", ".join(c["reasons"]) or "not seen by the tracepoint"
        cells = (name, c["netns"], c["iface"] or "-", c["delta"], c["traced"], reasons)
        lines.append("| " + " | ".join(str(x) for x in (*cells, c["untraced"])) + " |")
    if doc.get("not_traced"):
        lines += ["", "### Not seen by the tracepoint (counted by the kernel only)", ""]
        for e in doc["not_traced"]:
            lines.append(f"- {e['explanation']}")
            if e.get("fix"):
                lines.append(f"  - fix: {e['fix']}")
    return lines


def to_json_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"
