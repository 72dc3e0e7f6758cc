"""`python -m tracer` and the `droptrace` console script.

Importing the CLI takes a few tenths of a second: a Ctrl-C meanwhile ends droptrace as one
later would (exit 130, no traceback), since nothing is attached yet."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from tracer import oneline
        from tracer.cli import main as cli
    except KeyboardInterrupt:
        sys.exit(130)
    oneline.run_click("droptrace", cli)


if __name__ == "__main__":
    main()
