"""The typed vocabulary every stage speaks: hook -> decode -> enrich -> diagnose -> sinks.

`drop` holds what one drop is and becomes, `evidence` one record per kind of fact read from
the system, `tracing` what a tracing run is given and reports (filters, counters, hooks,
summary), `findings` what `doctor` says. Nothing here does I/O.
"""

from tracer.model.drop import (
    AttributedDrop,
    Category,
    Diagnosis,
    Drop,
    Facts,
    PodRef,
    Rule,
    proto_name,
)
from tracer.model.net import IPAddress

__all__ = [
    "AttributedDrop",
    "Category",
    "Diagnosis",
    "Drop",
    "Facts",
    "IPAddress",
    "PodRef",
    "Rule",
    "proto_name",
]
