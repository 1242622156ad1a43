"""Glob patterns over a file tree with symlinks, without walking a loop forever.

`glob.glob(..., recursive=True)` follows symlinked directories under `**` and has no
memory of where it has been: a `latest -> 2024-11-30` link lists every file twice, and a
loop (`sub/up -> ..`) is walked until the path is too long to resolve. `matching_files`
keeps glob's matching rules (`*`, `?`, `[...]` within one name; `**` alone as a name for
zero or more folders; names starting with "." only matched by a pattern that starts with
"."; symlinks followed), but a `**` walk enters each real folder (st_dev, st_ino) once,
and only regular files are returned: dangling links, FIFOs, sockets and devices are not.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat as stat_mode
from collections.abc import Callable, Iterator
from operator import attrgetter, itemgetter

_MAGIC = re.compile(r"[*?[]")

Found = tuple[str, os.stat_result]
"""A matching path, as spelled by the walk, and its stat (symlinks followed)."""

Match = tuple[str, os.stat_result, bool | None]
"""A `Found`, and whether its last name is a symlink (None: not looked at)."""


def matching_files(pattern: str) -> list[Found]:
    """The regular files an absolute `pattern` matches, sorted by path."""
    return sorted(((path, found) for path, found, _ in iter_matching(pattern)), key=itemgetter(0))


def iter_matching(pattern: str) -> Iterator[Match]:
    """The matches of `matching_files`, one at a time in walk order (not sorted): a plan of
    a million files need not hold a million `os.stat_result` (~650 bytes each) at once."""
    parts = pattern.split(os.sep)
    first_magic = next((i for i, p in enumerate(parts) if _MAGIC.search(p)), len(parts))
    if first_magic == len(parts):
        found = _regular(pattern)
        return iter([(pattern, found, None)] if found else [])
    root = os.sep.join(parts[:first_magic]) or os.sep
    return _match(root, parts[first_magic:])


def _match(folder: str, parts: list[str]) -> Iterator[Match]:
    part, rest = parts[0], parts[1:]
    if part == "**":
        for inner in _folders_below(folder):
            yield from (_match(inner, rest) if rest else _files_in(inner, _not_hidden))
    elif _MAGIC.search(part):
        accepts = _name_matcher(part)
        if rest:
            for entry in _entries(folder, accepts):
                if _is_dir(entry):
                    yield from _match(entry.path, rest)
        else:
            yield from _files_in(folder, accepts)
    else:
        path = os.path.join(folder, part)
        if rest:
            if os.path.isdir(path):
                yield from _match(path, rest)
        elif (found := _regular(path)) is not None:
            yield path, found, None


def _folders_below(top: str) -> Iterator[str]:
    """`top` and every folder under it, depth first in name order, following symlinks,
    each real folder once (a folder reached again through a link or a loop is skipped)."""
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            found = os.stat(folder)
        except OSError:
            continue
        if (found.st_dev, found.st_ino) in seen:
            continue
        seen.add((found.st_dev, found.st_ino))
        yield folder
        inner = [e.path for e in _entries(folder, _not_hidden) if _is_dir(e)]
        stack.extend(reversed(inner))


def _files_in(folder: str, accepts: Callable[[str], bool]) -> Iterator[Match]:
    """The regular files of one folder, in listing order (callers sort, or need no order)."""
    for entry in _entries(folder, accepts, ordered=False):
        try:
            found = entry.stat()
        except OSError:
            continue  # a dangling symlink, or gone since the listing
        if stat_mode.S_ISREG(found.st_mode):
            yield entry.path, found, _is_link(entry)


def _entries(folder: str, accepts: Callable[[str], bool], ordered: bool = True
             ) -> list[os.DirEntry[str]]:
    """The accepted entries of `folder`, by name if `ordered` (a `**` walk enters folders in
    that order, and the first path to reach a folder is the one it is walked under)."""
    try:
        with os.scandir(folder) as listing:
            found = [e for e in listing if accepts(e.name)]
    except OSError:
        return []
    if ordered:
        found.sort(key=attrgetter("name"))
    return found


def _name_matcher(part: str) -> Callable[[str], bool]:
    """glob's rule for one name: fnmatch, and no hidden names unless the part is hidden."""
    match = re.compile(fnmatch.translate(part)).match
    if part.startswith("."):
        return lambda name: match(name) is not None
    return lambda name: not name.startswith(".") and match(name) is not None


def _not_hidden(name: str) -> bool:
    return not name.startswith(".")


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_link(entry: os.DirEntry[str]) -> bool | None:
    """From the listing's d_type, without a system call where the file system gives it."""
    try:
        return entry.is_symlink()
    except OSError:
        return None


def _regular(path: str) -> os.stat_result | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found if stat_mode.S_ISREG(found.st_mode) else None


def object_pattern(pattern: str) -> tuple[str, re.Pattern[str]]:
    """For an `s3://bucket/...` pattern: the longest literal prefix (what to list) and a
    regular expression over whole URIs with the rules of `matching_files`: `*`, `?` and
    `[...]` within one name, `**` alone as a name for zero or more folders, names starting
    with "." only matched by a part that starts with "."."""
    parts = pattern.split("/")
    first_magic = next((i for i, p in enumerate(parts) if _MAGIC.search(p)), len(parts))
    if first_magic == len(parts):
        return pattern, re.compile(re.escape(pattern) + r"\Z")
    prefix = "/".join(parts[:first_magic]) + "/"
    regex = re.escape(prefix) + _REAL_NAMES
    rest = parts[first_magic:]
    for i, part in enumerate(rest):
        last = i == len(rest) - 1
        if part == "**":
            regex += r"(?:(?!\.)[^/]+/)*" + (r"(?!\.)[^/]+" if last else "")
        else:
            regex += _name_regex(part) + ("" if last else "/")
    return prefix, re.compile(regex + r"\Z")


_REAL_NAMES = r"(?!/)(?!\.\.?(?:/|\Z))(?!.*//)(?!.*/\.\.?(?:/|\Z))"
"""After the literal prefix (which ends in "/"): no empty, "." or ".." name in the key
(`in//a.csv`: a `*` could match the empty name). A local folder never lists such names,
and pyarrow's S3 file system cannot open them (ArrowInvalid: "Empty path component")."""


def _name_regex(part: str) -> str:
    """One glob name as a regular expression that never crosses a "/"."""
    out = "" if part.startswith(".") else r"(?!\.)"
    i = 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and (end := part.find("]", i + 2)) > 0:
            inner = part[i + 1:end]
            negate = inner.startswith("!")
            out += "[" + ("^/" if negate else "") + re.escape(inner[negate:]).replace(r"\-", "-") + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return out
