"""The bug report: one JSON document, rendered as Markdown; optionally redacted for posting."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

_IP_CANDIDATE = re.compile(
    r"(?<![\w:.])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w:.])"
)


class Redactor:
    """Replaces addresses and pod names with stable placeholders (same value, same name)."""

    def __init__(self) -> None:
        self._ips: dict[str, str] = {}
        self._names: dict[str, str] = {}

    def _ip(self, m: re.Match[str]) -> str:
        text = m.group(0)
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return text
        return self._ips.setdefault(text, f"ip-{len(self._ips) + 1}")

    def name(self, value: str) -> str:
        return self._names.setdefault(value, f"pod-{len(self._names) + 1}")

    def text(self, value: str) -> str:
        for real, placeholder in self._names.items():
            value = value.replace(real, placeholder)
        return _IP_CANDIDATE.sub(self._ip, value)

    def doc(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self.doc(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.doc(v, key) for v in value]
        if isinstance(value, str):
            if key in ("src_pod", "dst_pod", "svc", "hostname"):
                return self.name(value)
            return self.text(value)
        return value


def redact(doc: dict[str, Any]) -> dict[str, Any]:
    r = Redactor()
    # Pod and host names first, so they are also replaced where they appear in free text.
    for drop in doc.get("drops", []):
        for k in ("src_pod", "dst_pod", "svc"):
            if drop.get(k):
                r.name(drop[k])
    if doc.get("host", {}).get("hostname"):
        r.name(doc["host"]["hostname"])
    out: dict[str, Any] = r.doc(doc)
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
        f"Total {doc['totals']['matched']} drops; {len(doc['drops'])} kept in the recorder.",
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


def to_json_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"
