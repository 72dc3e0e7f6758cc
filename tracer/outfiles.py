"""Files droptrace writes for the user (`dump --out`, `--pcap`): checked before any work, and
private (they name hosts, addresses and rules, and hold packet bytes)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from tracer.errors import UsageError


def check_out(path: str, option: str = "--out") -> Path:
    """Where `option` will write, refused before any work if it cannot be written."""
    out = Path(path)
    try:
        if out.is_dir() and not out.is_symlink():
            raise UsageError(f"{option} {path}: is a directory")
        parent = out.parent
        if not parent.is_dir():
            raise UsageError(f"{option} {path}: no directory {parent}")
    except OSError as err:  # e.g. a directory on the way this user may not enter
        raise UsageError(f"{option} {path}: {err.strerror or err}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write in {parent}")
    return out


def write_private(out: Path, text: str) -> None:
    """Write a report readable by its owner only (it names hosts, addresses and rules).

    Into a new file of its own in the same directory, then renamed over `out`: a symlink
    planted at `out` by whoever can write the directory is replaced, never followed, so
    root's dump never overwrites or chmods the file it points to."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)  # O_EXCL, mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def open_private(out: Path, option: str) -> BinaryIO:
    """A file written as it grows (a live capture can be read while it runs): a new one is
    made readable by its owner only; an existing one is truncated only if it is a plain file
    with no other name (a symlink or a hard link planted in a shared directory is refused,
    so root never writes through it)."""
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        try:
            fd = os.open(out, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = os.open(out, flags)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                os.close(fd)
                raise UsageError(f"{option} {out}: not a plain file; not overwritten") from None
            os.ftruncate(fd, 0)
    except OSError as err:
        if err.errno == 40:  # ELOOP: O_NOFOLLOW met a symlink
            raise UsageError(f"{option} {out}: is a symbolic link; not followed") from None
        raise UsageError(f"{option} {out}: {err.strerror or err}") from None
    return os.fdopen(fd, "wb")
