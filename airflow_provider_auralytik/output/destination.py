"""Where an export writes: check the operator's ``destination`` string, then open it as an ``ObjectStoragePath``.

Two steps, so that everything that can be wrong with a destination is found before the first API request,
while the costly part (Airflow's filesystem imports, a remote store's client) can overlap the first requests:

* :func:`check_destination` (cheap, no I/O but a connection lookup): an absolute local path or an
  object-storage URL with a bucket, the provider its scheme needs installed, ``destination_conn_id`` a
  connection that exists. Every refusal is a :class:`DestinationError` of one line naming the parameter and
  the fix.
* :func:`open_destination`: the :class:`ObjectStoragePath` (a local directory is created if missing).

:func:`resolve_destination` does both.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_auralytik._compat import ObjectStoragePath

log = logging.getLogger(__name__)

_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$", re.DOTALL)
#: Object-store schemes, the Python modules their filesystem needs, and the extra that installs them.
_STORE_EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "s3": ("amazon", ("airflow.providers.amazon", "s3fs")),
    "s3a": ("amazon", ("airflow.providers.amazon", "s3fs")),
    "s3n": ("amazon", ("airflow.providers.amazon", "s3fs")),
    "gs": ("google", ("airflow.providers.google", "gcsfs")),
    "gcs": ("google", ("airflow.providers.google", "gcsfs")),
    "abfs": ("azure", ("airflow.providers.microsoft.azure", "adlfs")),
    "abfss": ("azure", ("airflow.providers.microsoft.azure", "adlfs")),
    "az": ("azure", ("airflow.providers.microsoft.azure", "adlfs")),
    "adl": ("azure", ("airflow.providers.microsoft.azure", "adlfs")),
}
_EXAMPLES = "e.g. /data/auralytik/conversations or s3://my-bucket/auralytik/conversations"


class DestinationError(ValueError):
    """A ``destination`` / ``destination_conn_id`` that cannot be written to; raised before any request."""


@dataclass(frozen=True)
class Destination:
    """A checked destination, not opened yet."""

    url: str
    """An absolute local path, or a URL with its scheme (``s3://bucket/prefix``)."""
    conn_id: str | None
    """The connection for an object store; ``None`` for a local path."""

    @property
    def is_local(self) -> bool:
        return not _URL_RE.match(self.url) or self.url.lower().startswith(("file://", "local://"))


def check_destination(destination: object, conn_id: str | None = None) -> Destination:
    """Check an operator's ``destination`` (and ``destination_conn_id``) without touching the store.

    :raises DestinationError: empty or whitespace, relative, a URL without a bucket/container, a scheme whose
        provider extra is not installed, or a ``conn_id`` that is not a defined connection (whatever the
        destination; a local one does not use it).
    """
    if not isinstance(destination, str) or not destination.strip():
        raise DestinationError(
            f"destination must be an absolute local path or an object-storage URL ({_EXAMPLES}), got {destination!r}."
        )
    text = destination.strip()
    match = _URL_RE.match(text)
    if conn_id:  # a typo here must not fall back to another store's ambient credentials, nor pass unnoticed
        _check_connection(conn_id, text)
    if match is None:
        local = os.path.expanduser(text)
        if not os.path.isabs(local):
            raise DestinationError(
                f"destination {text!r} is a relative path: a worker's current directory is no place for data; "
                f"give an absolute path or an object-storage URL ({_EXAMPLES})."
            )
        return Destination(os.path.normpath(local), None)
    scheme, rest = match.group("scheme").lower(), match.group("rest")
    if scheme in _LOCAL_PROTOCOLS:
        if not rest.startswith("/"):
            raise DestinationError(f"destination {text!r} must be an absolute file:// URL, e.g. file:///data/out.")
        return Destination(text, None)
    if not rest.split("/", 1)[0]:
        raise DestinationError(
            f"destination {text!r} names no bucket: write {scheme}://<bucket>/<prefix>, "
            f"e.g. {scheme}://my-bucket/auralytik/conversations."
        )
    _check_store_installed(scheme, text)
    return Destination(text, conn_id or None)


def _check_store_installed(scheme: str, url: str) -> None:
    if scheme not in _STORE_EXTRAS:
        return  # another fsspec filesystem: ObjectStoragePath says what it needs
    extra, modules = _STORE_EXTRAS[scheme]
    missing = [name for name in modules if _find_spec(name) is None]
    if missing:
        raise DestinationError(
            f"destination {url!r} needs the [{extra}] extra ({', '.join(missing)} not installed): "
            f'pip install "airflow-provider-auralytik[{extra}]".'
        )


def _find_spec(name: str) -> object | None:
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:  # a parent package is missing
        return None


def _check_connection(conn_id: str, url: str) -> None:
    from airflow_provider_auralytik._compat import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception as exc:
        if not any(cls.__name__ == "AirflowNotFoundException" for cls in type(exc).__mro__):
            raise
        env = f"AIRFLOW_CONN_{conn_id.upper()}"
        raise DestinationError(
            f"destination_conn_id {conn_id!r} is not a defined Airflow connection (needed for {url}): create it "
            f"(Admin > Connections, {env}, or a secrets backend) or fix the id."
        ) from None


def open_destination(destination: Destination) -> ObjectStoragePath:
    """The :class:`ObjectStoragePath` of a checked destination; a local directory is created if missing.

    With a ``conn_id`` Airflow resolves the connection and builds the filesystem right here, so call this at
    execution time, not at DAG-parse time or inside a running event loop.
    Note: ``file://`` URLs are not percent-decoded (``file:///a%20b`` is the directory ``a%20b``).
    """
    from airflow_provider_auralytik._compat import ObjectStoragePath

    if _URL_RE.match(destination.url):
        path = ObjectStoragePath(destination.url, conn_id=destination.conn_id)
    else:
        path = ObjectStoragePath(destination.url, protocol="file")
    if is_local(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_destination(destination: str, conn_id: str | None) -> ObjectStoragePath:
    """:func:`check_destination` then :func:`open_destination`: the operator's ``destination`` as a path.

    A plain local path must be absolute (``~`` is expanded); ``conn_id`` is not used for local paths.
    """
    return open_destination(check_destination(destination, conn_id))


def is_local(path: ObjectStoragePath) -> bool:
    return (path.protocol or "") in _LOCAL_PROTOCOLS


def invalidate(path: ObjectStoragePath) -> None:
    """Drop the filesystem's cached listing of ``path``.

    s3fs (and other fsspec object stores) answer ``exists()``/``info()``/``iterdir()`` from a listing cache,
    which does not see objects written by other processes or clients since it was filled; an
    ``unlink(missing_ok=True)`` would then silently skip an object that is really there.
    """
    try:
        path.fs.invalidate_cache(path.path)
    except Exception:
        log.debug("Could not invalidate listing cache for %s", path, exc_info=True)


def delete(path: ObjectStoragePath) -> None:
    """Delete one file/object; nothing if it is already gone."""
    invalidate(path)
    path.unlink(missing_ok=True)


def list_names(directory: ObjectStoragePath) -> set[str]:
    """Names of the entries directly under ``directory`` (fresh, not from a listing cache); empty if none."""
    invalidate(directory)  # files written by others since the listing was cached
    try:
        return {child.name for child in directory.iterdir()}
    except (FileNotFoundError, NotADirectoryError):  # s3fs: NotADirectoryError for a missing prefix
        return set()


def remove_tree(path: ObjectStoragePath) -> None:
    """Delete a directory (or prefix) and everything under it; nothing if it is already gone."""
    import contextlib

    invalidate(path)
    with contextlib.suppress(FileNotFoundError):
        path.fs.rm(path.path, recursive=True)
    invalidate(path)
