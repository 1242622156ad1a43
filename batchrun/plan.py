"""Planning: expand the source globs, fingerprint each file, cut batches.

The plan is pure: the same files (paths, sizes, mtimes) and the same batch limits give
the same batches with the same ids, whatever the machine or the order of the globs.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Callable
from itertools import groupby
from pathlib import Path

from batchrun.catalog import PlannedBatch, PlannedFile
from batchrun.config import Job
from batchrun.errors import ConfigError


def expand_sources(job: Job) -> list[PlannedFile]:
    """Every file matched by `source.paths`, sorted, each with its size, mtime and source."""
    matched: set[str] = set()
    for pattern in job.config.source.paths:
        absolute = pattern if os.path.isabs(pattern) else str(job.base_dir / pattern)
        matched.update(p for p in glob.glob(absolute, recursive=True) if os.path.isfile(p))
    if not matched:
        patterns = ", ".join(job.config.source.paths)
        raise ConfigError(str(job.path), "source.paths",
                          f"no files match {patterns} (relative to {job.base_dir})")
    source_of = source_function(job.config.source.group_by, str(job.path))
    return [_fingerprint(path, source_of) for path in sorted(matched)]


def source_function(group_by: str, where: str) -> Callable[[str], str]:
    """path → source name, per `[source] group_by`."""
    if group_by == "parent_dir":
        return lambda path: Path(path).parent.name
    if group_by == "none":
        return lambda path: "all"
    pattern = re.compile(group_by)
    group = next(iter(pattern.groupindex))

    def by_pattern(path: str) -> str:
        match = pattern.search(path)
        if not match or match.group(group) is None:
            raise ConfigError(where, "source.group_by",
                              f"pattern {group_by!r} does not match {path}")
        return match.group(group)

    return by_pattern


def _fingerprint(path: str, source_of: Callable[[str], str]) -> PlannedFile:
    from batchrun.read import gzip_size_estimate  # Arrow stays out of light commands

    stat = os.stat(path)
    absolute = os.path.abspath(path)
    return PlannedFile(path=absolute, size=stat.st_size, mtime=stat.st_mtime,
                       source=source_of(absolute), expanded=gzip_size_estimate(path))


def cut_batches(files: list[PlannedFile], max_files: int, max_bytes: int) -> list[PlannedBatch]:
    """Group files by source, then close a batch at max_files or max_bytes, whichever first.

    A batch never mixes sources, so per-source limits can act on whole batches.
    A single file larger than max_bytes gets a batch of its own.
    """
    batches: list[PlannedBatch] = []
    for source, group in groupby(sorted(files, key=lambda f: (f.source, f.path)),
                                 key=lambda f: f.source):
        for chunk in _chunks(list(group), max_files, max_bytes):
            batches.append(_batch(len(batches), source, chunk))
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
    digest = hashlib.sha1()
    for planned in files:
        digest.update(f"{planned.path}\0{planned.size}\0{planned.mtime}\n".encode())
    return PlannedBatch(batch_id=f"b{seq:05d}-{digest.hexdigest()[:8]}", seq=seq,
                        source=source, files=tuple(files))
