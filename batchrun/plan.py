"""Planning: expand the source globs, fingerprint each file, cut batches.

The plan is pure: the same files (paths, sizes, mtimes) and the same batch limits give
the same batches with the same ids, whatever the machine. A file reached by several
paths is planned once, under the first spelling (see `expand_sources`).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import groupby
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from batchrun import objectstore
from batchrun.catalog import Catalog, stored_fingerprint
from batchrun.config import Job, JobConfig, compile_group_by
from batchrun.errors import ConfigError
from batchrun.identity import CHANGED, ETAG, content_hash, difference, may_recover, object_fingerprint
from batchrun.model import FileState, Fingerprint, PlannedBatch, PlannedFile
from batchrun.walk import iter_matching, object_pattern


def expand_sources(job: Job, state_dir: Path | None = None) -> list[PlannedFile]:
    """Every file matched by `source.paths`, sorted, each with its fingerprint and source.

    A file is planned once however many paths reach it (symlinks, a `latest` link, two
    spellings of one glob): it is known by (st_dev, st_ino), and named by its first
    spelling, taking the patterns in the job's order and each pattern's matches sorted.
    A file whose real path lies in the job's staging dir or in `state_dir` is never
    planned: a run must not read its own output (or catalog) as input."""
    objectstore.configure(job.config.storage.model_dump())
    if objectstore.is_object(job.staging_dir):
        # no boto3, no credentials, no such bucket: fail now, not in every worker
        staging = objectstore.Location.of(objectstore.join(str(job.staging_dir), ""))
        objectstore.client().probe(staging.bucket, staging.key)
    local_dirs = [Path(d) for d in (job.staging_dir, state_dir) if d and not objectstore.is_object(d)]
    own = OwnDirs(local_dirs)
    patterns = [p for p in job.config.source.paths if not objectstore.is_object(p)]
    found = _distinct_files(patterns, job.base_dir, own) if patterns else {}
    objects = matching_objects([p for p in job.config.source.paths if objectstore.is_object(p)],
                               str(job.staging_dir), own)
    if not found and not objects:
        listed = ", ".join(job.config.source.paths)
        skipped = f"; {own.skipped} match(es) in its staging or state dir skipped" if own.skipped else ""
        raise ConfigError(str(job.path), "source.paths",
                          f"no files match {listed} (relative to {job.base_dir}{skipped})")
    source_of = source_function(job.config.source.group_by, str(job.path))
    content = job.config.source.fingerprint == "sha256"
    # popped as planned: each compact stat is freed as its PlannedFile takes its place
    planned = [_planned(name, found.pop(name), source_of, content) for name in sorted(found)]
    return planned + [_planned_object(objects[uri], source_of) for uri in sorted(objects)]


def matching_objects(patterns: list[str], staging: str, own: OwnDirs | None = None
                     ) -> dict[str, objectstore.Listed]:
    """uri → listing of each object the `s3://` patterns match, outside the staging prefix
    (a run never reads its own output; `own.skipped` counts those left out). One listing
    per pattern's literal prefix."""
    found: dict[str, objectstore.Listed] = {}
    inside = staging.rstrip("/") + "/"
    skipped: set[str] = set()
    for pattern in patterns:
        prefix, matcher = object_pattern(pattern)
        for listed in objectstore.listing(prefix):
            if not matcher.match(listed.uri):
                continue
            if listed.uri.startswith(inside):
                skipped.add(listed.uri)
            else:
                found.setdefault(listed.uri, listed)
    if own is not None:
        own.skipped += len(skipped)
    return found


def _planned_object(listed: objectstore.Listed, source_of: Callable[[str], str]) -> PlannedFile:
    """An object's fingerprint is its size and ETag (no mtime_ns: a HEAD gives the time in
    whole seconds, a listing in milliseconds); its mtime is only shown."""
    return PlannedFile(path=listed.uri, size=listed.size, mtime=listed.mtime,
                       source=source_of(listed.uri), sha256=f"{ETAG}{listed.etag}")


class OwnDirs:
    """The run's own folders (staging, state), by real path: is a match inside one?

    A match's folder is resolved once per folder (cached); the file itself only when it
    is a symlink (the walk says which, from the listing), so a plan costs no system call
    per file for this."""

    def __init__(self, folders: list[Path]) -> None:
        self.roots = tuple(os.path.realpath(folder) for folder in folders)
        self.skipped = 0
        self._folders: dict[str, bool] = {}

    def holds(self, path: str, link: bool | None = None) -> bool:
        """`link`: whether `path` itself is a symlink; None: look."""
        if os.path.islink(path) if link is None else link:
            inside = self._inside(os.path.realpath(path))
        else:
            folder = path.rpartition(os.sep)[0] or os.sep
            if folder not in self._folders:
                self._folders[folder] = self._inside(os.path.realpath(folder))
            inside = self._folders[folder]
        self.skipped += inside
        return inside

    def _inside(self, real: str) -> bool:
        return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep)
                   for root in self.roots)


class Stat(NamedTuple):
    """The fields of an os.stat_result that planning uses (~100 bytes, not ~650), and the
    path that reached the file (the walk's spelling)."""

    path: str
    st_size: int
    st_mtime: float
    st_mtime_ns: int
    st_dev: int
    st_ino: int


class _Inodes:
    """Files by (st_dev, st_ino), kept as one dict of inode numbers per device: no tuple
    per file, the inode number shared with the file's Stat."""

    def __init__(self) -> None:
        self.by_device: dict[int, dict[int, Stat]] = {}

    def on(self, device: int) -> dict[int, Stat]:
        """inode → Stat of the files on `device` (a plan has a few devices, many files)."""
        return self.by_device.get(device) or self.by_device.setdefault(device, {})

    def __iter__(self) -> Iterator[Stat]:
        for inodes in self.by_device.values():
            yield from inodes.values()


def _distinct_files(patterns: list[str], base_dir: Path, own: OwnDirs) -> dict[str, Stat]:
    """name → stat of each distinct file the patterns match (see `expand_sources`), in
    the order of the patterns, each pattern's new files sorted by path."""
    planned = _Inodes()
    found: dict[str, Stat] = {}
    for pattern in patterns:
        absolute = pattern if os.path.isabs(pattern) else str(base_dir / pattern)
        for stat in sorted(_first_spellings(absolute, own, planned), key=itemgetter(0)):
            planned.on(stat.st_dev)[stat.st_ino] = stat
            found[_name(stat.path, stat)] = stat
    return found


def _first_spellings(pattern: str, own: OwnDirs, planned: _Inodes) -> _Inodes:
    """The files `pattern` matches that earlier patterns did not, each under the least of
    its paths (the first in sorted order) that is not in the run's own dirs."""
    first = _Inodes()
    devices: dict[int, int] = {}  # one int object per device, not per file
    device: int | None = None  # the last match's device, and its files in `planned`, `first`
    seen: dict[int, Stat] = {}
    mine: dict[int, Stat] = {}
    for path, found, link in iter_matching(pattern):
        if found.st_dev != device:
            device = devices.setdefault(found.st_dev, found.st_dev)
            seen, mine = planned.on(device), first.on(device)
        if found.st_ino in seen or own.holds(path, link):
            continue
        known = mine.get(found.st_ino)
        if known is None or path < known.path:
            mine[found.st_ino] = Stat(path, found.st_size, found.st_mtime, found.st_mtime_ns,
                                      device, found.st_ino)
    return first


def _name(path: str, stat: Stat) -> str:
    """The absolute, normalized spelling of `path`; its real path if normalizing a ".."
    lands on another file (a ".." after a symlinked folder)."""
    if _normal(path):
        return path
    name = os.path.abspath(path)
    if ".." in path.split(os.sep):
        try:
            same = os.path.samestat(os.stat(name), stat)  # type: ignore[arg-type]
        except OSError:
            same = False
        if not same:
            return os.path.realpath(path)
    return name


_ODD = re.compile(f"{re.escape(os.sep)}({re.escape(os.sep)}|\\.|$)")
"""What os.path.normpath would change in an absolute path: "//", a name starting with "."
("." and ".." among them), a trailing separator."""


def _normal(path: str) -> bool:
    """Whether os.path.abspath(path) == path, without its cost (a million times a plan)."""
    return path.startswith(os.sep) and _ODD.search(path) is None


def source_function(group_by: str, where: str) -> Callable[[str], str]:
    """path → source name, per `[source] group_by` (a pattern runs on RE2: linear time)."""
    if group_by == "parent_dir":
        return _parent_name()
    if group_by == "none":
        return lambda path: "all"
    pattern = compile_group_by(group_by)
    group = next(iter(pattern.groupindex))

    def by_pattern(path: str) -> str:
        match = pattern.search(path)
        if not match or match.group(group) is None:
            raise ConfigError(where, "source.group_by",
                              f"pattern {group_by!r} does not match {path}")
        return sys.intern(str(match.group(group)))

    return by_pattern


def _parent_name() -> Callable[[str], str]:
    """path → the name of its folder, worked out once per folder (a plan asks a million
    times): one string per folder, not per file. Path(): 10x slower."""
    names: dict[str, str] = {}

    def parent_name(path: str) -> str:
        head = path.rpartition(os.sep)[0]  # all that os.path.dirname(path) depends on
        if head not in names:
            names[head] = sys.intern(os.path.basename(os.path.dirname(path)))
        return names[head]

    return parent_name


def _planned(path: str, stat: Stat | os.stat_result, source_of: Callable[[str], str],
             content: bool) -> PlannedFile:
    return PlannedFile(path=path, size=stat.st_size, mtime=stat.st_mtime,
                       source=source_of(path), mtime_ns=stat.st_mtime_ns,
                       sha256=content_hash(path) if content else None,
                       dev=stat.st_dev, ino=stat.st_ino,
                       expanded=_gzip_estimate(path) if path.endswith(".gz") else None)


def _gzip_estimate(path: str) -> int:
    from batchrun.readers.source import gzip_size_estimate

    return gzip_size_estimate(path)


def cut_batches(files: list[PlannedFile], max_files: int, max_bytes: int,
                first_seq: int = 0) -> list[PlannedBatch]:
    """Group files by source, then close a batch at max_files or max_bytes, whichever first.

    A batch never mixes sources, so per-source limits can act on whole batches.
    A single file larger than max_bytes gets a batch of its own. Sequence numbers start
    at `first_seq` (files planned again on resume follow the run's last batch).
    """
    batches: list[PlannedBatch] = []
    # by (source, path): two stable sorts on one key each, no key tuple per file
    ordered = sorted(sorted(files, key=attrgetter("path")), key=attrgetter("source"))
    for source, group in groupby(ordered, key=attrgetter("source")):
        for chunk in _chunks(list(group), max_files, max_bytes):
            batches.append(_batch(first_seq + len(batches), source, chunk))
    return batches


def _chunks(files: list[PlannedFile], max_files: int, max_bytes: int) -> list[list[PlannedFile]]:
    chunks: list[list[PlannedFile]] = []
    current: list[PlannedFile] = []
    size = 0
    for planned in files:
        if current and (len(current) >= max_files or size + planned.size > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(planned)
        size += planned.size
    if current:
        chunks.append(current)
    return chunks


def _batch(seq: int, source: str, files: list[PlannedFile]) -> PlannedBatch:
    digest = hashlib.sha1("".join(f"{planned.path}\0{planned.size}\0{planned.mtime}\n"
                                  for planned in files).encode())
    return PlannedBatch(batch_id=f"b{seq:05d}-{digest.hexdigest()[:8]}", seq=seq,
                        source=source, files=tuple(files))


def replan_recoverable(catalog: Catalog, run_id: str, config: JobConfig,
                       reach: Reach | None = None, every: bool = False) -> list[str]:
    """On resume: plan again, as new batches of the run, the files quarantined for a reason
    that may have gone away (missing, permission denied, I/O error, changed since
    planning), with their fingerprints taken now. Committed batches are never redone: a
    quarantined file staged no row.

    One file, one identity, across the resume: a path that now reaches a file the run
    already has under another path (a `latest` link flipped to another planned day) is
    not planned again; it stays quarantined, saying which. And a file that a path reached
    when planned, no longer reached by it, is planned under another spelling the source
    globs match now (`reach`), if the run has it under none. Returns one line per file,
    for the run log. `every` (retry-failed): every quarantined file, whatever its reason
    (a supplier re-sent it)."""
    content = config.source.fingerprint == "sha256"
    rows = [row for row in catalog.quarantined_files(run_id)
            if every or may_recover(row["error"])]
    again = {row["path"] for row in rows}
    known = catalog.identities(run_id)
    owners = {key: path for path, _, key in known if key is not None and path not in again}
    replan = _Replan(in_run={path for path, _, _ in known})
    for row in rows:
        replan.look_at(row, _replanned(row, content), owners)
    if reach and replan.lost:
        replan.find_lost(reach, owners, source_function(config.source.group_by, "the run"),
                         content)
    replan.resolve(owners)
    _record_replan(catalog, run_id, config, replan)
    return replan.notes


@dataclass(frozen=True)
class Reach:
    """Where the job's source globs are matched again on resume: the job file's folder,
    and the run's own folders (staging, state), which are never input."""

    patterns: tuple[str, ...]
    base_dir: Path
    own_dirs: tuple[Path, ...]


@dataclass
class _Replan:
    """What a resume plans again (`files`, with a `warnings` line each), leaves quarantined
    with a new reason (`refused`), and the planned identities no path reaches now (`lost`:
    identity → the path that reached it)."""

    in_run: set[str]
    """Every path of the run: one is never planned twice."""
    files: list[PlannedFile] = field(default_factory=list)
    warnings: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    lost: dict[tuple[int, int], tuple[str, Fingerprint]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)
    """Paths left out for good, each with its reason: the file they reached when planned
    is in the run under another path, and they reach nothing else the run lacks."""
    gone: set[str] = field(default_factory=set)
    """Paths that no longer reach any file."""

    def look_at(self, row: dict[str, Any], replanned: tuple[PlannedFile | None, str],
                owners: dict[tuple[int, int], str]) -> None:
        planned, note = replanned
        if planned is None:
            self.gone.add(row["path"])
        was = stored_fingerprint(row).identity
        identity = planned.fingerprint.identity if planned else None
        if was is not None and identity != was:
            self.lost[was] = (row["path"], stored_fingerprint(row))
        owner = owners.get(identity) if identity else None
        if planned is not None and owner not in (None, planned.path):
            self.refused[row["path"]] = (f"{CHANGED}: is now the same file as {owner},"
                                         " already in this run")
            note, planned = f"not re-planned on resume: {self.refused[row['path']]}", None
        self.notes.append(f"{row['path']}: {note}")
        if planned is not None:
            if identity:
                owners.setdefault(identity, planned.path)
            self.add(planned, note)

    def add(self, planned: PlannedFile, note: str) -> None:
        self.files.append(planned)
        self.warnings[planned.path] = note

    def find_lost(self, reach: Reach, owners: dict[tuple[int, int], str],
                  source_of: Callable[[str], str], content: bool) -> None:
        """Plan each lost file that the globs reach now under a path the run lacks. It must
        be the planned file unchanged (identity, size and mtime): an inode number freed by
        a deletion may be reused by another file."""
        lost = {key: found for key, found in self.lost.items() if key not in owners}
        if not lost:
            return
        own = OwnDirs(list(reach.own_dirs))
        for name, stat in _distinct_files(list(reach.patterns), reach.base_dir, own).items():
            path, planned = lost.get((stat.st_dev, stat.st_ino), ("", None))
            if planned is not None and (stat.st_dev, stat.st_ino) not in owners \
                    and name not in self.in_run \
                    and difference(replace(planned, sha256=None), _fingerprint(stat)) is None:
                note = (f"planned on resume in place of {path}, which reached this file when"
                        f" planned (inode {stat.st_ino}) and no longer does")
                self.notes.append(f"{name}: {note}")
                owners[(stat.st_dev, stat.st_ino)] = name
                self.add(_planned(name, stat, source_of, content), note)


    def resolve(self, owners: dict[tuple[int, int], str]) -> None:
        """Settle each path whose planned file is in the run under another path and that
        reaches nothing new (another file of the run, or none): skipped, with why."""
        for identity, (path, _) in self.lost.items():
            owner = owners.get(identity)
            if owner is None or owner == path or not (path in self.refused or path in self.gone):
                continue
            now = self.refused.pop(path, f"{CHANGED}: no longer found")
            self.resolved[path] = f"{now}; the file it reached when planned is in this run as {owner}"
            self.notes.append(f"{path}: skipped: {self.resolved[path]}")


def _fingerprint(stat: Stat) -> Fingerprint:
    """identity.fingerprint(path, stat) without content, from a compact Stat."""
    return Fingerprint(size=stat.st_size, mtime_ns=stat.st_mtime_ns, inode=stat.st_ino,
                       device=stat.st_dev)


def _record_replan(catalog: Catalog, run_id: str, config: JobConfig, replan: _Replan) -> None:
    batches = cut_batches(replan.files, config.batch.max_files, config.batch.max_bytes,
                          first_seq=catalog.next_seq(run_id))
    if batches:
        catalog.replan_files(run_id, batches, replan.warnings)
    if replan.refused:
        catalog.set_file_errors(run_id, replan.refused)
    if replan.resolved:
        catalog.set_file_errors(run_id, replan.resolved, FileState.SKIPPED)


def _replanned(row: dict[str, Any], content: bool) -> tuple[PlannedFile | None, str]:
    """A quarantined file (a catalog row) fingerprinted again, and what changed."""
    source, reason = str(row["source"]), str(row["error"])[:200]
    if objectstore.is_object(row["path"]):
        return _replanned_object(row, source, reason)
    try:
        planned = _planned(row["path"], os.stat(row["path"]), lambda _: source, content)
    except OSError as exc:
        return None, f"not re-planned on resume: still {exc.strerror or exc} (quarantined for: {reason})"
    change = difference(stored_fingerprint(row), planned.fingerprint)
    return planned, f"re-planned on resume: {change or 'unchanged'} (quarantined for: {reason})"


def _replanned_object(row: dict[str, Any], source: str, reason: str
                      ) -> tuple[PlannedFile | None, str]:
    try:
        now = object_fingerprint(row["path"])
    except objectstore.ObjectStoreError as exc:
        return None, f"not re-planned on resume: still {exc.reason} (quarantined for: {reason})"
    planned = PlannedFile(path=row["path"], size=now.size, mtime=time.time(), source=source,
                          sha256=now.sha256)
    change = difference(stored_fingerprint(row), now)
    return planned, f"re-planned on resume: {change or 'unchanged'} (quarantined for: {reason})"
