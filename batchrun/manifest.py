"""Incremental planning: which of the matched files a run ingests.

A job's table serves, for each source path, the version its latest committing run staged
(`Catalog.served_files`). A run classifies each file its globs match against that version:

- **new**: no served version (never committed: a first run, a new file, or a file whose
  earlier run quarantined it or never finished);
- **unchanged**: the served version's fingerprint: size and mtime_ns (and the sha256
  with `[source] fingerprint = "sha256"`); an object's size and ETag. A file whose size
  matches but whose mtime does not (touched, copied again) is compared by content: the
  xxh3_128 of its bytes against the one its worker recorded when it staged it. The
  checksum a plan computes is kept in the catalog's `manifest` (by a run, never by
  `batchrun plan`), so a touched file is read once, not every night;
- **changed**: anything else: planned again, and its new rows supersede the old ones;
- **settling**: modified within `[source] settle` of the plan's start (a half-written
  upload): left for the next run, recorded nowhere.

A new path whose content is that of a file the table serves (the same size and xxh3_128;
an object's size and ETag) is a re-sent or renamed copy: it counts as unchanged and is
not staged again, so a `mv` or a re-delivery under another name never doubles rows (the
rows keep the name they were staged under). Only files whose size equals a served
file's are read for this. `--full-refresh` skips it: it stages what the source holds.

Only new and changed files are planned (with `full_refresh`, every file not settling).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrun.catalog import Catalog
from batchrun.config import Job
from batchrun.errors import RunNotFoundError
from batchrun.layout import file_checksum
from batchrun.model import Fingerprint, PlanCounts, PlannedBatch, PlannedFile, ServedFile
from batchrun.plan import cut_batches, expand_sources

NEW, CHANGED, UNCHANGED, SETTLING = "new", "changed", "unchanged", "settling"
KINDS = (NEW, CHANGED, UNCHANGED, SETTLING)

Verified = tuple[str, int, int, str]
"""(path, size, mtime_ns, checksum) of a file whose content a plan read."""


@dataclass
class Selection:
    """A plan's classification of the matched files, and the files to plan."""

    full_refresh: bool = False
    planned: list[PlannedFile] = field(default_factory=list)
    """New and changed files (every file not settling, with `full_refresh`)."""
    paths: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    """Matched paths by kind, in plan order."""
    verified: list[Verified] = field(default_factory=list)
    """Checksums this plan computed, for the catalog's manifest."""

    @property
    def counts(self) -> PlanCounts:
        n = {kind: len(paths) for kind, paths in self.paths.items()}
        return PlanCounts(n[NEW], n[CHANGED], n[UNCHANGED], n[SETTLING], self.full_refresh)

    def add(self, planned: PlannedFile, kind: str) -> None:
        self.paths[kind].append(planned.path)
        if kind in (NEW, CHANGED) or (self.full_refresh and kind == UNCHANGED):
            self.planned.append(planned)


@dataclass(frozen=True)
class History:
    """What the job's earlier runs left: the served versions and the verified checksums."""

    served: dict[str, ServedFile] = field(default_factory=dict)
    verified: dict[str, tuple[int, int, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, catalog: Catalog | None, job: str) -> History:
        if catalog is None:
            return cls()
        return cls({s.path: s for s in catalog.served_files(job)},
                   catalog.verified_checksums(job))


def select_files(job: Job, state_dir: Path, history: History, began: float,
                 full_refresh: bool = False) -> Selection:
    """Match, fingerprint and classify the job's files (see the module's docstring);
    `began`: the plan's start, which `[source] settle` counts back from."""
    settle = job.config.source.settle
    recent = began - settle if settle > 0 else None
    selection = Selection(full_refresh=full_refresh)
    classified = [(planned, *classify(planned, history, recent))
                  for planned in expand_sources(job, state_dir)]
    restaged = {p.path for p, kind, _ in classified if kind == CHANGED}
    copies = None if full_refresh else _ServedContent(history, restaged)
    for planned, kind, verified in classified:
        if kind == NEW and copies is not None:
            kind, verified = copies.classify(planned, history)
        selection.add(planned, kind)
        if verified is not None:
            selection.verified.append(verified)
    return selection


def select_with_catalog(job: Job, state_dir: Path, began: float,
                        full_refresh: bool = False) -> Selection:
    """`select_files` against the state dir's catalog, opened read-only (a state dir
    without one: every file is new); nothing is written, nothing created."""
    try:
        catalog: Catalog | None = Catalog(state_dir, read_only=True)
    except RunNotFoundError:
        catalog = None
    try:
        history = History.of(catalog, job.name)
    finally:
        if catalog is not None:
            catalog.close()
    return select_files(job, state_dir, history, began, full_refresh)


def classify(planned: PlannedFile, history: History, recent: float | None
             ) -> tuple[str, Verified | None]:
    """The file's kind, and the checksum computed to decide it, if one was (the same with
    --full-refresh, so its counts say what changed; only what is planned differs)."""
    served = history.served.get(planned.path)
    if served is not None and same_stat(served.fingerprint, planned.fingerprint):
        return UNCHANGED, None
    if recent is not None and planned.mtime > recent:
        return SETTLING, None
    if served is None:
        return NEW, None
    was = served.fingerprint
    if planned.size != was.size or planned.mtime_ns is None:
        return CHANGED, None  # an object: same_stat compared its ETag
    if planned.sha256 is not None and was.sha256 is not None:
        return (UNCHANGED if planned.sha256 == was.sha256 else CHANGED), None
    if served.checksum is None:
        return CHANGED, None  # staged by a batchrun that kept no checksum
    return _by_content(planned, served.checksum, history.verified.get(planned.path))


def same_stat(was: Fingerprint, now: Fingerprint) -> bool:
    """Size and mtime_ns (and content hashes where both have one) equal; an object's size
    and ETag equal."""
    if was.size != now.size:
        return False
    if was.sha256 is not None and now.sha256 is not None and was.sha256 != now.sha256:
        return False
    if now.mtime_ns is None:  # an object: its ETag decides
        return was.sha256 is not None and was.sha256 == now.sha256
    return was.mtime_ns == now.mtime_ns


def _by_content(planned: PlannedFile, served: str, known: tuple[int, int, str] | None
                ) -> tuple[str, Verified | None]:
    """Same size, another mtime: compare the content with the served version's checksum,
    read from the manifest when it holds this (size, mtime_ns), else from the file."""
    assert planned.mtime_ns is not None
    if known is not None and known[:2] == (planned.size, planned.mtime_ns):
        return (UNCHANGED if known[2] == served else CHANGED), None
    try:
        checksum = file_checksum(planned.path)
    except OSError:
        return CHANGED, None  # gone or unreadable: its worker says which
    verified = (planned.path, planned.size, planned.mtime_ns, checksum)
    return (UNCHANGED if checksum == served else CHANGED), verified


class _ServedContent:
    """The served versions by size, to find a new path that holds a served file's bytes.
    A version the run stages again (`restaged`: its path changed) is not served after
    the run, so a copy of it is new: counted unchanged, its rows would be lost."""

    def __init__(self, history: History, restaged: set[str]) -> None:
        self.by_size: dict[int, set[str]] = {}
        for served in history.served.values():
            if served.path in restaged:
                continue
            content = served.checksum if served.fingerprint.mtime_ns is not None \
                else served.fingerprint.sha256  # an object: its ETag
            if content is not None:
                self.by_size.setdefault(served.fingerprint.size, set()).add(content)

    def classify(self, planned: PlannedFile, history: History) -> tuple[str, Verified | None]:
        """UNCHANGED for a copy of a served file, else NEW (and the checksum it read)."""
        contents = self.by_size.get(planned.size)
        if not contents:
            return NEW, None
        if planned.mtime_ns is None:  # an object: its ETag
            return (UNCHANGED if planned.sha256 in contents else NEW), None
        known = history.verified.get(planned.path)
        if known is not None and known[:2] == (planned.size, planned.mtime_ns):
            return (UNCHANGED if known[2] in contents else NEW), None
        try:
            checksum = file_checksum(planned.path)
        except OSError:
            return NEW, None  # its worker says what is wrong with it
        verified = (planned.path, planned.size, planned.mtime_ns, checksum)
        return (UNCHANGED if checksum in contents else NEW), verified


@dataclass(frozen=True)
class Preview:
    """What `batchrun run` would do now (`batchrun plan`): the classification and the
    batches of the files it would plan."""

    selection: Selection
    batches: list[PlannedBatch]

    def sources(self) -> dict[str, dict[str, int]]:
        """source → its batches, files and bytes, in source order."""
        found: dict[str, dict[str, int]] = {}
        for batch in self.batches:
            totals = found.setdefault(batch.source, {"batches": 0, "files": 0, "bytes": 0})
            totals["batches"] += 1
            totals["files"] += len(batch.files)
            totals["bytes"] += sum(f.size for f in batch.files)
        return found

    def as_json(self, examples: int = 3) -> dict[str, Any]:
        counts = self.selection.counts
        return {"full_refresh": counts.full_refresh,
                "files": {kind: len(paths) for kind, paths in self.selection.paths.items()},
                "examples": {kind: paths[:examples]
                             for kind, paths in self.selection.paths.items()},
                "planned_files": len(self.selection.planned),
                "batches": len(self.batches),
                "bytes": sum(f.size for f in self.selection.planned),
                "sources": self.sources()}


def preview(job: Job, state_dir: Path, full_refresh: bool = False) -> Preview:
    """The plan a run would make now, made without writing anything (`batchrun plan`)."""
    selection = select_with_catalog(job, state_dir, time.time(), full_refresh)
    batches = cut_batches(selection.planned, job.config.batch.max_files,
                          job.config.batch.max_bytes)
    return Preview(selection, batches)
