"""The kernel's own drop counters, read while tracing and reconciled with the traced drops:
which counters count drops (catalog), their increase set next to the traced drops
(reconcile), in words (explain), per run (source), and while a session runs (watch)."""
