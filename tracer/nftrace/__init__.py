"""The exact nf_tables rule behind a drop, from nftrace (NFNLGRP_NFTRACE over netlink).

When netfilter drops a flow in a namespace, droptrace adds a table there that sets
`meta nftrace` on that flow's next packets (rate-limited), and listens to the namespace's
trace group. The kernel then reports every rule verdict for those packets: table, chain,
rule handle and verdict. The first drop of a flow is attributed by counter deltas
(netfilter.py); the following ones by the trace, which also covers rules without counters.

The table is named after droptrace's pid and removed on every exit; a state file lists the
namespaces it went to, so a run killed with SIGKILL is cleaned up by the next start.
"""

from tracer.nftrace.codec import Verdict
from tracer.nftrace.rules import RuleTexts
from tracer.nftrace.tables import NfTrace, remove_stale

__all__ = ["NfTrace", "RuleTexts", "Verdict", "remove_stale"]
