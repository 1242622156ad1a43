"""One file, one identity: what a planned file was, and whether it is still that file.

The plan records each file's fingerprint: its size, modification time in nanoseconds and
identity (st_dev, st_ino) (`[source] fingerprint = "stat"`, the default), plus a SHA-256
of its content when the job asks for `fingerprint = "sha256"`. A worker compares the
inode, never st_dev: a worker on another machine sees another st_dev for the same NFS
file. The ctime is not compared: chmod, chown, a new hard link (backup tools, `cp -al`)
and, on ext4, a rename change it without changing a byte. A worker compares the file with its fingerprint
before reading it (a changed file is quarantined, never staged silently) and stats it
again after reading (a file that changed meanwhile fails the attempt, which is retried).

An object (`s3://...`) has no inode or mtime worth comparing: its fingerprint is its size
and ETag, the ETag kept where a file keeps its content hash (as "etag:<ETag>"), and the
same two rules apply to it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

from batchrun import objectstore
from batchrun.errors import TransientSourceError
from batchrun.layout import file_checksum
from batchrun.model import Fingerprint

CHANGED = "changed since planning"
RECOVERABLE_REASONS = ("file not found", "permission denied", "I/O error", CHANGED)
"""Quarantine reasons that may have gone away by the next `resume` (the file restored,
its permissions fixed, the disk back, a new version written): resume plans such files
again. Reasons about the content itself (parse errors, rejects, headers) are final."""

_CHUNK = 1 << 20


def fingerprint(path: str, stat: os.stat_result | None = None,
                content: bool = False) -> Fingerprint:
    """The fingerprint of the file at `path` (`stat`: its os.stat, when already known)."""
    stat = stat or os.stat(path)
    return Fingerprint(size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                       sha256=content_hash(path) if content else None,
                       inode=stat.st_ino, device=stat.st_dev)


ETAG = "etag:"
"""How an object's ETag is kept in the `sha256` field of its fingerprint."""


def object_fingerprint(path: str) -> Fingerprint:
    """An object's size and ETag, now (one HEAD request)."""
    found = objectstore.head(path)
    return Fingerprint(size=found.size, sha256=f"{ETAG}{found.etag}")


def content_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_checksum(path: str) -> str | None:
    """What a worker records of a file it staged, for incremental planning
    (`batchrun.manifest`): the xxh3_128 of a local file's bytes, None for an object (its
    ETag is in its fingerprint) or a file it cannot read now."""
    if objectstore.is_object(path):
        return None
    try:
        return file_checksum(path)
    except OSError:
        return None


def difference(planned: Fingerprint, now: Fingerprint) -> str | None:
    """What changed between two fingerprints, in words; None if nothing did. A hash is
    compared only when both have one."""
    if planned.inode is not None and now.inode is not None and planned.inode != now.inode:
        return f"now another file (inode {planned.inode} → {now.inode})"
    if planned.size != now.size:
        return f"size {planned.size} → {now.size} bytes"
    if planned.mtime_ns is not None and planned.mtime_ns != now.mtime_ns:
        return "mtime changed"
    if planned.sha256 is not None and now.sha256 is not None and planned.sha256 != now.sha256:
        return "content changed (ETag)" if planned.sha256.startswith(ETAG) else "content changed (sha256)"
    return None


def change_since_planning(path: str, planned: Fingerprint) -> str | None:
    """Why the file is no longer the planned one, or None. A file that cannot be stat'ed
    is left to the reader, which names the problem (not found, permission denied)."""
    if objectstore.is_object(path):
        try:
            change = difference(planned, object_fingerprint(path))
        except objectstore.ObjectStoreError:
            return None
        return f"{CHANGED}: {change}" if change else None
    try:
        now = fingerprint(path)
        change = difference(planned, now)
        if change is None and planned.sha256 is not None:
            change = difference(planned, replace(now, sha256=content_hash(path)))
    except OSError:
        return None
    return f"{CHANGED}: {change}" if change else None


def check_not_changed_while_read(path: str, planned: Fingerprint) -> None:
    """After reading: a size, mtime or inode that moved means the bytes read may be torn, so the
    attempt fails with a transient error (the retry finds the file changed since planning)."""
    if objectstore.is_object(path):
        try:
            change = difference(planned, object_fingerprint(path))
        except objectstore.ObjectStoreError:
            return
        if change:
            raise TransientSourceError(path, f"changed while being read: {change}")
        return
    try:
        now = fingerprint(path)
    except OSError:
        return  # gone or unreadable: the reader has said so, or read it before it went
    change = difference(replace(planned, sha256=None), now)
    if change:
        raise TransientSourceError(path, f"changed while being read: {change}")


def may_recover(reason: str | None) -> bool:
    """Whether a file quarantined for `reason` is worth planning again on resume."""
    return bool(reason) and reason.startswith(RECOVERABLE_REASONS)  # type: ignore[union-attr]
