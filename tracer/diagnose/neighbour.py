"""Neighbour failures: the next hop did not answer ARP/ND, or too many packets waited for it."""

from __future__ import annotations

from tracer.diagnose.base import Cause
from tracer.model import Category

CAUSE = Cause(
    "neighbour",
    Category.NEIGHBOUR,
    reasons={
        "NEIGH_FAILED": "the next hop did not answer ARP/ND",
        "NEIGH_QUEUEFULL": "too many packets queued waiting for ARP/ND",
        "NEIGH_CREATEFAIL": "no neighbour entry could be created",
        "NEIGH_DEAD": "the neighbour entry went away",
    },
)
