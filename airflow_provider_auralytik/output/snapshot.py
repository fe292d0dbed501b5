"""Snapshot commits: how a run publishes its parts without ever damaging the snapshot readers see.

A destination holds at most one *committed snapshot*: ``_manifest.json`` and the files it lists. A run
replaces it like this:

1. It gets a **run token**, ``<start time, UTC, to the microsecond>Z-<8 random hex>`` (e.g.
   ``20261202T020000.123456Z-1a2b3c4d``): unique per run and attempt, and ordered by start time (so a rerun,
   even one started within the same second, is newer). It writes its parts under names that contain the
   token (``part-<token>-00000.jsonl.gz``), so no other run ever writes or overwrites them, and nothing of
   the committed snapshot is touched while it writes.
2. **Commit** (:func:`commit_manifest`): the manifest, which records the token, replaces the earlier one in
   one atomic step: locally a temporary file renamed over it, on object stores one ``PUT``. The step is a
   compare-and-swap where the store allows it, so two runs cannot both believe they replaced the same
   manifest: locally under an exclusive ``flock`` of the directory; on S3 a conditional ``PUT``
   (``If-Match`` the ETag read just before, ``If-None-Match: *`` when there was none). A run refuses to
   commit over a manifest with a *newer* token (:class:`SnapshotConflictError`, one line; a retry has a
   newer token and succeeds), so an older, slower run never replaces a newer run's snapshot.
3. **Cleanup, only after the commit** (:func:`collect_garbage`): the manifest is read again and ``part-*``
   files are deleted only if they are not listed by it, carry an *older* token than it (or none, as version
   0.1's ``part-00000.jsonl.gz``), and are not listed by the combined manifest of a sliced export above
   (a ``slice-NNN`` directory's parent). A run still writing with an older token loses its parts here, but it
   can never commit any more (step 2), so it fails instead of publishing a manifest that lists them; a run
   with a newer token keeps its parts.

A run that fails deletes the parts it wrote (best effort) and never writes a manifest; a killed run leaves
its parts as strays, which the next successful commit removes. Guarantees, and where they stop (stores
without conditional writes), are written for readers in ``docs/output.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_auralytik.conversations.window import SLICE_PREFIX, UTC
from airflow_provider_auralytik.output.destination import delete, invalidate, is_local, list_names
from airflow_provider_auralytik.output.manifest import (
    MANIFEST_NAME,
    manifest_bytes,
    manifest_run_token,
    parse_manifest,
)
from airflow_provider_auralytik.output.parts import RUN_TOKEN_PATTERN, part_run_token

if TYPE_CHECKING:
    from airflow_provider_auralytik._compat import ObjectStoragePath

log = logging.getLogger(__name__)

_TOKEN_TIME = "%Y%m%dT%H%M%S.%fZ"
RUN_TOKEN_RE = re.compile(rf"^{RUN_TOKEN_PATTERN}$")
_SLICE_DIR_RE = re.compile(rf"^{re.escape(SLICE_PREFIX)}\d+$")
_TMP_SUFFIX = ".tmp"
#: Conditional PUTs that lose to another commit are retried this often before giving up.
_MAX_COMMIT_ATTEMPTS = 5
_S3_PROTOCOLS = frozenset({"s3", "s3a", "s3n"})


class SnapshotConflictError(RuntimeError):
    """Another run committed a newer snapshot while this one was writing; this run's output was discarded."""


def new_run_token(started: datetime | None = None) -> str:
    """A run token: the start time (UTC, to the µs) and 8 random hex digits: ``20261202T020000.123456Z-1a2b3c4d``.

    :param started: The run's start time (aware); now if omitted.
    """
    when = (started or datetime.now(UTC)).astimezone(UTC)
    return f"{when.strftime(_TOKEN_TIME)}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------- the commit point, per store


class _CommitPoint:
    """``_manifest.json`` of one destination: read it with a version, replace it if that version still holds.

    The base class is for stores without conditional writes (``gs://``, ``abfs://`` …): the check and the
    write are two steps there, so two commits within the same instant can still race (see docs/output.md).
    """

    def __init__(self, destination: ObjectStoragePath) -> None:
        self.destination = destination
        self.path = destination.joinpath(MANIFEST_NAME)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        yield

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        """The current manifest (or ``None``) and a version to make the write conditional on."""
        invalidate(self.path)  # also drops the cached listing of the destination
        try:
            with self.path.open("rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        return parse_manifest(data, self.path), None

    def write(self, payload: bytes, version: str | None, run_token: str) -> bool:
        """Replace the manifest in one step; ``False`` if it changed since it was read as ``version``."""
        with self.path.open("wb") as f:  # a single PUT
            f.write(payload)
        invalidate(self.path)
        return True


class _LocalCommitPoint(_CommitPoint):
    """A local directory: commits are serialised by an exclusive ``flock`` on the directory itself (released by
    the kernel if the process dies, so a killed run never leaves a lock behind), and the manifest is replaced
    by renaming a complete temporary file over it."""

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        import fcntl

        fd = os.open(self.destination.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def write(self, payload: bytes, version: str | None, run_token: str) -> bool:
        directory = self.destination.path
        for name in os.listdir(directory):  # left by a run killed mid-commit; we hold the lock
            if name.startswith(MANIFEST_NAME + ".") and name.endswith(_TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
        tmp = os.path.join(directory, f"{MANIFEST_NAME}.{run_token}{_TMP_SUFFIX}")
        # Atomic for every reader and against a killed process. No fsync: the parts are not synced either;
        # surviving power loss is the filesystem's job (ext4 and xfs flush a file before a rename over another).
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, self.path.path)
        return True


class _S3CommitPoint(_CommitPoint):
    """S3: the manifest's ETag is read with it, and the new one is a conditional ``PUT`` on that ETag."""

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        fs, key = self.path.fs, self.path.path
        invalidate(self.path)
        try:
            etag = fs.info(key).get("ETag")
            data = fs.cat_file(key)
        except FileNotFoundError:
            return None, None
        # If the object changed between the two calls, the conditional PUT on this ETag fails and we read again.
        return parse_manifest(data, self.path), etag or _NO_ETAG

    def write(self, payload: bytes, version: str | None, run_token: str) -> bool:
        condition = _put_condition(version)
        try:
            self.path.fs.pipe_file(self.path.path, payload, **condition)
        except Exception as exc:
            if _error_code(exc) in ("PreconditionFailed", "412") or isinstance(exc, FileExistsError):
                return False  # FileExistsError: s3fs's translation of a failed If-None-Match
            if not condition or _error_code(exc) not in ("NotImplemented", "501"):
                raise
            log.warning("%s does not support conditional writes: committing with a plain PUT", self.path)
            self.path.fs.pipe_file(self.path.path, payload)
        finally:
            invalidate(self.path)
        return True


_NO_ETAG = "-"


def _put_condition(version: str | None) -> dict[str, str]:
    """``If-Match`` the ETag read, ``If-None-Match: *`` when there was no manifest; nothing for a store that
    reports no ETags (nothing to make the PUT conditional on)."""
    if version == _NO_ETAG:
        return {}
    return {"IfMatch": version} if version else {"IfNoneMatch": "*"}


def _error_code(exc: BaseException) -> str:
    """The S3 error code behind an exception s3fs raised (``""`` if there is none)."""
    for candidate in (exc.__cause__, exc):
        error = (getattr(candidate, "response", None) or {}).get("Error", {})
        if error.get("Code"):
            return str(error["Code"])
    return "PreconditionFailed" if "PreconditionFailed" in str(exc) else ""


def commit_point(destination: ObjectStoragePath) -> _CommitPoint:
    if is_local(destination):
        return _LocalCommitPoint(destination)
    if (destination.protocol or "") in _S3_PROTOCOLS:
        return _S3CommitPoint(destination)
    return _CommitPoint(destination)


# ---------------------------------------------------------------------- commit and cleanup


def commit_manifest(destination: ObjectStoragePath, manifest: dict[str, Any], run_token: str) -> dict[str, Any]:
    """Publish ``manifest`` (plus ``"run_token"``) as ``destination/_manifest.json``: the commit point.

    Nothing is deleted here; call :func:`collect_garbage` afterwards.

    :raises SnapshotConflictError: the destination's manifest has a newer run token (or kept changing under
        this commit): the newer snapshot stands and this run's manifest is not written.
    """
    full = {**manifest, "run_token": run_token}
    payload = manifest_bytes(full)  # fails on an unserialisable value before anything is published
    point = commit_point(destination)
    for _ in range(_MAX_COMMIT_ATTEMPTS):
        with point.exclusive():
            current, version = point.read()
            theirs = manifest_run_token(current)
            if theirs > run_token:
                raise _conflict(destination, theirs, run_token)
            try:
                if point.write(payload, version, run_token):
                    return full
            except Exception:
                # The write may have landed before the error (a lost response): then this run is committed.
                if manifest_run_token(point.read()[0]) == run_token:
                    return full
                raise
    raise _conflict(destination, manifest_run_token(point.read()[0]), run_token)


def _conflict(destination: ObjectStoragePath, theirs: str, mine: str) -> SnapshotConflictError:
    return SnapshotConflictError(
        f"Another run (token {theirs or 'unknown'}) committed {destination.protocol or 'file'}://{destination.path} "
        f"while this run ({mine}) was writing: its snapshot stands and this run's output was discarded; "
        "retry the task to export again."
    )


def collect_garbage(destination: ObjectStoragePath, *, keep: Iterable[str] = ()) -> list[str]:
    """Delete the ``part-*`` files of ``destination`` that no committed snapshot can still need; return their names.

    Reads the committed manifest afresh and deletes a part only if it is not listed there, not in ``keep``, not
    listed by a parent's combined manifest (for a ``slice-NNN`` directory), and its run token is older than the
    manifest's. Without a manifest nothing is deleted. Errors are logged, never raised: the commit stands.
    """
    try:
        current, _ = _CommitPoint(destination).read()  # no version needed: one GET
        if current is None:
            return []
        bound = manifest_run_token(current)
        kept = {str(f["path"]) for f in current.get("files", [])} | set(keep) | listed_by_parent(destination)
        stale = sorted(
            name
            for name in list_names(destination)
            if (token := part_run_token(name)) is not None and name not in kept and token < bound
        )
    except Exception:
        log.warning("Could not list stale parts under %s; the next run will retry", destination, exc_info=True)
        return []
    removed = []
    for name in stale:
        try:
            delete(destination.joinpath(name))
            removed.append(name)
        except Exception:
            log.warning("Could not delete stale part %s/%s", destination, name, exc_info=True)
    if removed:
        log.info("Deleted %d part(s) no committed manifest lists under %s", len(removed), destination)
    return removed


def listed_by_parent(destination: ObjectStoragePath) -> set[str]:
    """For a ``slice-NNN`` directory: the names the parent's combined manifest lists in it (they stay readable
    until a new combined manifest commits). Empty for any other directory, or without a parent manifest."""
    name = destination.name
    if not _SLICE_DIR_RE.match(name):
        return set()
    parent, _ = _CommitPoint(destination.parent).read()
    prefix = f"{name}/"
    files = (parent or {}).get("files", [])
    return {str(f["path"])[len(prefix) :] for f in files if str(f["path"]).startswith(prefix)}


def discard_parts(destination: ObjectStoragePath, names: Iterable[str]) -> None:
    """Best effort: delete a failed run's own parts (never listed by any manifest: their names are its own)."""
    for name in names:
        try:
            delete(destination.joinpath(name))
        except Exception:
            log.warning("Could not delete %s/%s after a failed run", destination, name, exc_info=True)
