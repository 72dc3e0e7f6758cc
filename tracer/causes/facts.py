"""What the cause hooks saw, as evidence; and a reason where the kernel gave none.

Kernels before 5.17 free every dropped packet without a reason. Then the reason is taken
from the hook that saw the drop decided, else from a location that frees for one reason only.
"""

from __future__ import annotations

from tracer import abi
from tracer.model import Drop
from tracer.model.evidence import CauseHook, NetfilterHook
from tracer.system.kernel import NO_REASON

NF_HOOKS = {0: "PREROUTING", 1: "INPUT", 2: "FORWARD", 3: "OUTPUT", 4: "POSTROUTING"}
NF_FAMILIES = {1: "inet", 2: "ipv4", 3: "arp", 7: "bridge", 10: "ipv6", 12: "decnet"}
# Functions whose only kfree_skb of a received packet means one thing (checked on 5.10).
_BY_LOCATION = {
    "__udp4_lib_rcv": "NO_SOCKET",  # after icmp_send(PORT_UNREACH); checksum errors too
    "__udp6_lib_rcv": "NO_SOCKET",
    "nf_hook_slow": "NETFILTER_DROP",  # its NF_DROP case
}


def facts(drop: Drop, reason: str, location: str) -> tuple[str, CauseHook | None]:
    """The reason to classify by, and what the cause hooks add to the evidence."""
    seen: CauseHook | None = None
    inferred: str | None = None
    if drop.cause == abi.const("DT_HOOK_RPFILTER"):
        seen = CauseHook("fib_validate_source returned -EXDEV (reverse-path check failed)")
        inferred = "IP_RPFILTER"
    elif drop.cause == abi.const("DT_HOOK_NETFILTER"):
        hook = NF_HOOKS.get(drop.nf_hook, str(drop.nf_hook))
        family = NF_FAMILIES.get(drop.nf_pf, str(drop.nf_pf))
        seen = CauseHook(
            f"nf_hook_slow returned a drop verdict at {family} {hook}",
            NetfilterHook(hook, family),
        )
        inferred = "NETFILTER_DROP"
    elif reason == NO_REASON and location in _BY_LOCATION:
        inferred = _BY_LOCATION[location]
        seen = CauseHook(f"freed at {location}, taken as {inferred}")
    if reason != NO_REASON or inferred is None or seen is None:
        return reason, seen
    # The kernel gave none: droptrace's hooks did.
    return inferred, CauseHook(seen.cause, seen.netfilter, reason_inferred=True)
