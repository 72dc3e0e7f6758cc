"""Sinks: where attributed drops go. They format; they never enrich."""
