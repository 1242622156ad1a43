"""The state dir is private: directories 0700, files 0600, whatever the umask.

The catalog holds job configs, paths and error texts; the logs the same. Modes are set
explicitly (a umask can only take bits away from what `mkdir`/`open` ask for, and a
permissive one such as 000 would leave them group- and world-readable). The staging dir
is not the state dir: its files are shared output and follow the user's umask.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) if needed; a directory created here is 0700."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            return path  # created meanwhile by another process, which set its mode
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty with mode 0600 unless it exists (an existing file is left as
    it is: it may belong to someone else, who only reads it)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path
