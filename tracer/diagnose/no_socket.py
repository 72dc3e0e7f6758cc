"""No socket: nothing listens on the destination port (a reply whose connection was
un-DNAT'd elsewhere is bridge_netfilter's, which has evidence and so comes first)."""

from __future__ import annotations

from tracer.diagnose.base import Cause
from tracer.model import Category

CAUSE = Cause(
    "no_socket",
    Category.NO_SOCKET,
    reasons={"NO_SOCKET": "no socket listens on the destination port"},
    fix="start the service on that port, or point the client at the right port",
)
