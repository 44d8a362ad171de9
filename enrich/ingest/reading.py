"""Reading a file block by block: opening it, framing blocks, checking them in threads.

Binary blocks of about ``chunk_bytes`` are read (transcoded to UTF-8 first if the
dialect's encoding is another: :mod:`enrich.ingest.transcoding`); each is framed
(:mod:`enrich.ingest.framing`) and cut after its last complete record, the rest
carried over (the buffer grows geometrically for records longer than a block, up to
``max_record_bytes``).  The records of a block are checked (:mod:`enrich.ingest.chunks`)
in a worker thread, since numpy and pyarrow release the GIL, while the next block is
read and framed; and the framing itself runs in a thread of its own, ahead of the
caller, which meanwhile stores the previous chunk.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Final, cast

import numpy as np

from enrich.ingest.chunks import ParsedChunk, build_chunk
from enrich.ingest.dialect import CsvDialect
from enrich.ingest.exceptions import InputFileError
from enrich.ingest.framing import BlockFraming, ByteScan, frame_block
from enrich.ingest.header import HeaderRead, read_header
from enrich.ingest.hints import FileHint
from enrich.ingest.transcoding import transcoding_reader

logger = logging.getLogger("enrich.ingest")

__all__ = ["PREFETCH_CHUNKS", "input_reader", "iter_chunks", "open_input", "prefetch"]

#: Blocks checked concurrently (numpy and pyarrow release the GIL).
WORKERS: Final[int] = 2
#: Parsed chunks kept ready ahead of the caller (memory: that many chunks more; one is enough
#: to keep the load busy).
PREFETCH_CHUNKS: Final[int] = 1
_DONE: Final = object()


def open_input(path: str) -> BinaryIO:
    """Open the file (a local path, or an ``s3://`` URL) for reading, or raise
    :class:`InputFileError` saying what to do."""
    if path.startswith("s3://"):
        return _open_object(path)
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's with-block
    except FileNotFoundError as exc:
        raise InputFileError(
            f"{path}: file not found. Check the path, or create the file first."
        ) from exc
    except IsADirectoryError as exc:
        raise InputFileError(
            f"{path}: is a directory, not a CSV file. Pass the path of the CSV file itself."
        ) from exc
    except PermissionError as exc:
        raise InputFileError(
            f"{path}: permission denied. Make the file readable by this user."
        ) from exc
    except OSError as exc:
        raise InputFileError(f"{path}: cannot open the file ({exc}). Check the path.") from exc


def _open_object(url: str) -> BinaryIO:
    """An ``s3://`` object as a stream (Arrow's S3 filesystem; see :func:`enrich.files.open_input`)."""
    from enrich.files import open_input as open_object

    try:
        return open_object(url)
    except OSError as exc:  # pyarrow reports S3 errors (missing key, access denied) as OSError
        raise InputFileError(f"{url}: cannot read the object ({' '.join(str(exc).split())}). Check the URL "
                             "and the credentials (AWS_* variables).") from exc


def checked_reader(name: str, stream: BinaryIO) -> Callable[[int], bytes]:
    """``stream.read`` turning OS errors into :class:`InputFileError`."""

    def read(size: int) -> bytes:
        try:
            return stream.read(size)
        except IsADirectoryError as exc:
            raise InputFileError(
                f"{name}: is a directory, not a CSV file. Pass the path of the CSV file itself."
            ) from exc
        except OSError as exc:
            raise InputFileError(f"{name}: read error ({exc}). Check the file and retry.") from exc

    return read


def input_reader(name: str, stream: BinaryIO, dialect: CsvDialect) -> Callable[[int], bytes]:
    """``read(size)`` of the file's content in UTF-8, OS errors as :class:`InputFileError`."""
    read = checked_reader(name, stream)
    return transcoding_reader(read, dialect.encoding, name) if dialect.transcoded else read


def prefetch(chunks: Generator[ParsedChunk, None, None], depth: int) -> Iterator[ParsedChunk]:
    """``chunks``, produced in a thread up to ``depth`` ahead of the caller.

    Framing a block (finding its records' bounds) is Python-driven numpy work: in a
    thread of its own it overlaps with what the caller does with the previous chunk
    (the database load, in SQLite, releases the GIL). An error of the producer is
    raised in the caller; a caller that stops early stops the producer, which closes
    ``chunks`` (its file and workers) in its own thread.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not offer(chunk):
                    return
            offer(_DONE)
        except Exception as exc:  # noqa: BLE001 - handed over to the caller, raised there
            offer(exc)
        finally:
            chunks.close()

    producer = threading.Thread(target=produce, name="ingest-framing", daemon=True)
    producer.start()
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield cast(ParsedChunk, item)
    finally:
        stop.set()
        producer.join()


def _framed_blocks(
    read: Callable[[int], bytes], header: HeaderRead, chunk_bytes: int, max_record_bytes: int,
    delimiter: int,
) -> Iterator[tuple[ByteScan, BlockFraming, int]]:
    """(scan, framing, line number of its first byte) of each block with records in it."""
    buf, final, line = header.rest, header.at_eof, header.next_line
    skipping = False  # dropping the rest of a rejected line that went on past the block
    while True:
        if buf and not skipping:
            scan = ByteScan(buf, final, max_record_bytes, delimiter)
            framing = frame_block(scan)
            if framing.consumed or framing.error_starts:
                yield scan, framing, line
            line += int(np.searchsorted(scan.newlines, framing.consumed))
            skipping = framing.skip_rest_of_line
            buf = b"" if skipping else buf[framing.consumed :]
            del scan, framing
        if final:
            return
        data = read(max(chunk_bytes, len(buf)))
        if not data:
            final = True
        elif skipping:
            newline = data.find(b"\n")
            if newline < 0:
                continue
            data = data[newline + 1 :]
            line += 1
            skipping = False
        buf = buf + data if buf else data


def iter_chunks(
    name: str, dialect: CsvDialect, chunk_bytes: int, max_record_bytes: int
) -> Generator[ParsedChunk, None, None]:
    """The chunks of file ``name``, in order, checked in worker threads (the generator
    behind :func:`enrich.ingest.read_chunks`)."""
    with open_input(name) as stream:
        read = input_reader(name, stream, dialect)
        header = read_header(name, read, chunk_bytes, max_record_bytes, dialect)
        layout = header.layout
        logger.debug(
            "%s: header OK (%d columns; id, amount, wording are columns %s)",
            name, layout.n_columns, ", ".join(str(p + 1) for p in layout.positions),
        )
        tally = _Tally(name)
        blocks = _framed_blocks(read, header, chunk_bytes, max_record_bytes, dialect.delimiter_byte)
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ingest") as pool:
            pending: deque[Future[tuple[ParsedChunk, list[FileHint]]]] = deque()
            for scan, framing, line in blocks:
                while len(pending) >= WORKERS:
                    yield from tally.non_empty(*pending.popleft().result())
                pending.append(pool.submit(build_chunk, scan, framing, line, layout, dialect))
                del scan, framing
            while pending:
                yield from tally.non_empty(*pending.popleft().result())
        logger.debug("%s: %d valid rows, %d rejected rows (duplicates are paired when loading)", name, tally.valid,
                     tally.rejected)


class _Tally:
    """Rows yielded so far, for the closing log line, and the kinds of hints given."""

    def __init__(self, name: str) -> None:
        self.name, self.valid, self.rejected = name, 0, 0
        self.hints_given: set[str] = set()

    def non_empty(self, chunk: ParsedChunk, hints: list[FileHint]) -> Iterator[ParsedChunk]:
        """The chunk, counted, with the hints not given yet (each logged once), if it holds
        any row."""
        if not chunk.rows_read:
            return
        self.valid += len(chunk.valid)
        self.rejected += len(chunk.rejected)
        logger.debug("%s: chunk with %d valid and %d rejected rows",
                     self.name, len(chunk.valid), len(chunk.rejected))
        new = [hint for hint in hints if hint.kind not in self.hints_given]
        if new:
            self.hints_given.update(hint.kind for hint in new)
            messages = tuple(f"{self.name}: {hint.message}" for hint in new)
            for message in messages:
                logger.warning("%s", message)
            chunk = dataclasses.replace(chunk, hints=messages)
        yield chunk
