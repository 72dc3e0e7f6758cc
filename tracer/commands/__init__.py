"""The subcommands of `droptrace`, one module per family (lab, recorder, agent, doctor); the
root command and its live trace are tracer.cli. Declarations and rendering only."""
