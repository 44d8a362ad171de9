"""Files: atomic replacement of what the project writes for others to read, and reading inputs.

A reader (node_exporter, a spreadsheet, a script) sees the old complete file or
the new complete one, never a half-written one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, cast

logger = logging.getLogger(__name__)


def replace_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a hidden temporary sibling (``.<name>.<random>.tmp``), flush and fsync
    it, set its permissions, rename it over ``path`` and fsync the directory.

    On any error (also ``KeyboardInterrupt``) the temporary file is removed and ``path``
    is untouched. Raises ``OSError`` (missing or read-only directory, disk full...).
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fchmod(tmp.fileno(), mode)
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; best effort (some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        logger.debug("cannot open %s to fsync it: %s", directory, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        logger.debug("cannot fsync directory %s: %s", directory, exc)
    finally:
        os.close(fd)


def open_input(location: str) -> BinaryIO:
    """A binary stream of an input file: a local path, or an ``s3://`` URL read through Arrow's
    S3 filesystem (credentials and endpoint from the usual AWS variables, such as
    ``AWS_ENDPOINT_URL_S3`` or Metaflow's ``METAFLOW_S3_ENDPOINT_URL``)."""
    if not location.startswith("s3://"):
        return open(location, "rb")
    from pyarrow import fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("METAFLOW_S3_ENDPOINT_URL")
    filesystem, key = (fs.S3FileSystem(endpoint_override=endpoint), location.removeprefix("s3://")) if endpoint \
        else fs.FileSystem.from_uri(location)
    return cast(BinaryIO, filesystem.open_input_stream(key))


def file_digest(location: str) -> tuple[str, int]:
    """SHA-256 (hex) and size of an input file (local or ``s3://``), read in 8 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with open_input(location) as handle:
        while block := handle.read(8 * 1024 * 1024):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size
