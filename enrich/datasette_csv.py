"""A datasette plugin: every CSV datasette serves has its formula cells escaped.

datasette's own CSV export (``/db/table.csv``, views, canned queries, arbitrary
SQL ``/db.csv?sql=``, ``_dl=1`` downloads and ``_stream=on`` full exports) writes
cells verbatim, so a wording such as ``=HYPERLINK("http://x")`` would run as a
formula when the file is opened in a spreadsheet ("CSV injection", see
:mod:`enrich.export`). That export is built into datasette, not a renderer
plugin, so this plugin wraps datasette's ASGI application (the ``asgi_wrapper``
hook) and rewrites the body of CSV responses on the way out with the project's
single rule, :func:`enrich.export.escape_formula`.

How a CSV response is recognised: the request asks for the csv format (a path
ending in ``.csv``, the only way datasette 0.65 routes to its CSV export; a
``_format=csv`` query argument counts too) and the response is a 200 in
``text/plain`` or ``text/csv``. The ``_trace=1`` debug page (HTML) and error pages
pass unchanged.

Text versus numbers: the CSV has lost the SQLite types, and datasette writes
numbers like ``-12.5`` that start with ``-``. A cell spelled like a number as
Python writes one (``-12``, ``-12.5``, ``1e-05``, ``-inf``) is left alone; every
other cell goes through the rule. A wording that is exactly the text ``-12.5`` is
therefore not escaped: harmless, since a spreadsheet reads it as that number,
never as a formula. Every record is treated alike, the header row included (as
:func:`enrich.export.escape_frame` does for column names): the project's column
names never start with a formula character, so they come out unchanged.

Streaming-safe: the body is processed in batches of about :data:`BATCH_BYTES`,
each cut at the last record boundary (a line end outside quotes: a quoted
wording may hold line breaks), so memory stays bounded however long a
``_stream=on`` export is. A batch with nothing to escape goes out byte for byte;
otherwise its records are written again with the same CSV dialect datasette
uses. A response that declares a Content-Length (datasette's CSV responses do
not) is buffered whole and sent with the corrected length.

How it is loaded: the project declares it as a datasette plugin (the ``datasette``
entry point group in ``pyproject.toml``), so every datasette started in the project's
environment loads it, ``enrich browse`` included (it runs ``python -m datasette serve``
and refuses to start when the entry point is missing). Tests that drive datasette in
their own process add or remove it with :func:`register` and :func:`unregister`.
"""
from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from itertools import chain, islice, repeat
from typing import Any
from urllib.parse import parse_qs

import pandas as pd
from datasette import hookimpl
from datasette.plugins import pm

from enrich.export import escape_formula

#: Name the plugin is registered under (shown by datasette's ``/-/plugins``).
PLUGIN_NAME = "enrich-csv-formula-escape"
#: Bytes gathered before a batch is escaped and sent on (records are never split).
BATCH_BYTES = 64 * 1024
#: A cell spelled like a number as Python (hence datasette) writes one: left as it is.
NUMBER_PATTERN = r"(?:-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|-?inf|nan)"
#: Content types of datasette's CSV responses (``text/csv`` with ``_dl=1``).
CSV_CONTENT_TYPES = (b"text/plain", b"text/csv")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def escape_csv_text(text: str) -> str:
    """``text`` (whole CSV records, datasette's dialect) with every formula cell escaped.

    Every cell goes through :func:`enrich.export.escape_formula`, except those
    spelled like numbers (:data:`NUMBER_PATTERN`), which stay as they are. When
    nothing needs escaping, ``text`` itself is returned, so the bytes are exactly
    those datasette wrote. Vectorized over the cells (Arrow strings).
    """
    if not text:
        return text
    # a field is never longer than the text holding it; the limit is only ever raised
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    lengths = list(map(len, rows))
    cells = pd.Series(list(chain.from_iterable(rows)), dtype="string[pyarrow]")
    escaped = escape_formula(cells)
    changed = (escaped != cells).to_numpy(dtype=bool, na_value=False)
    if changed.any():
        numbers = cells[changed].str.fullmatch(NUMBER_PATTERN).to_numpy(dtype=bool, na_value=False)
        changed[changed] = ~numbers
    if not changed.any():
        return text
    values = cells.to_numpy(dtype=object)
    values[changed] = escaped.to_numpy(dtype=object)[changed]
    out = io.StringIO(newline="")
    cell_stream = iter(values)
    csv.writer(out).writerows(map(islice, repeat(cell_stream), lengths))  # the rows again, as read
    return out.getvalue()


def record_boundary(text: str) -> int:
    """Length of the longest prefix of ``text`` made of whole CSV records (0 if none).

    ``text`` starts at a record boundary. A line end closes a record when it is
    outside quotes, i.e. when the ``"`` before it are even in number (a quote
    inside a quoted field is doubled).
    """
    end = text.rfind("\n")
    if end < 0:
        return 0
    quotes = text.count('"', 0, end)
    while quotes % 2:
        previous = text.rfind("\n", 0, end)
        if previous < 0:
            return 0
        quotes -= text.count('"', previous, end)
        end = previous
    return end + 1


class CsvFormulaEscaper:
    """Incremental escaping of a CSV body: bytes in, escaped bytes out, records never split."""

    def __init__(self, batch_bytes: int | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._batch_bytes = BATCH_BYTES if batch_bytes is None else batch_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self._pending = ""  # the start of a record whose end has not come yet

    def feed(self, data: bytes, final: bool = False) -> bytes:
        """Take the next piece of the body; return what can be sent on now (all of it when ``final``)."""
        if data:
            self._chunks.append(data)
            self._size += len(data)
        # a record longer than a batch waits for as many new bytes as it already holds:
        # each byte is then rescanned a bounded number of times, however long the record
        if not final and self._size < max(self._batch_bytes, len(self._pending)):
            return b""
        text = self._pending + self._decoder.decode(b"".join(self._chunks), final)
        self._chunks, self._size = [], 0
        cut = len(text) if final else record_boundary(text)
        self._pending = text[cut:]
        return escape_csv_text(text[:cut]).encode("utf-8")


def requests_csv(scope: Scope) -> bool:
    """Whether an HTTP request asks datasette for CSV (``.csv`` path or ``_format=csv``)."""
    if scope.get("path", "").rsplit("/", 1)[-1].endswith(".csv"):
        return True
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return "csv" in query.get("_format", [])


def _header(headers: Sequence[Sequence[bytes]], name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case) in an ASGI header list, if present."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class EscapeCsvFormulas:
    """ASGI middleware: escapes the formula cells of datasette's CSV responses (see the module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; rewrite the response body when it is a CSV."""
        if scope.get("type") != "http" or not requests_csv(scope):
            await self.app(scope, receive, send)
            return
        escaper: CsvFormulaEscaper | None = None
        held_start: Message | None = None  # buffered mode: the start waits for the whole body
        body: list[bytes] = []

        async def escaping_send(message: Message) -> None:
            nonlocal escaper, held_start
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                content_type = (_header(headers, b"content-type") or b"").lower()
                if message.get("status") == 200 and content_type.startswith(CSV_CONTENT_TYPES):
                    escaper = CsvFormulaEscaper()
                    if _header(headers, b"content-length") is not None:
                        held_start = message
                        return
                await send(message)
            elif message["type"] == "http.response.body" and escaper is not None:
                more = bool(message.get("more_body", False))
                out = escaper.feed(message.get("body", b""), final=not more)
                if held_start is not None:
                    body.append(out)
                    if not more:
                        whole = b"".join(body)
                        headers = [(k, v) for k, v in held_start.get("headers", [])
                                   if k.lower() != b"content-length"]
                        headers.append((b"content-length", str(len(whole)).encode("ascii")))
                        await send({**held_start, "headers": headers})
                        await send({"type": "http.response.body", "body": whole, "more_body": False})
                elif out or not more:
                    await send({"type": "http.response.body", "body": out, "more_body": more})
            else:
                await send(message)

        await self.app(scope, receive, escaping_send)


@hookimpl
def asgi_wrapper(datasette: object) -> Callable[[ASGIApp], ASGIApp]:
    """datasette hook: wrap the application in :class:`EscapeCsvFormulas`."""
    return EscapeCsvFormulas


def register() -> None:
    """Register this plugin with datasette's plugin manager (once per process)."""
    if pm.get_plugin(PLUGIN_NAME) is None:
        pm.register(sys.modules[__name__], name=PLUGIN_NAME)


def unregister() -> None:
    """Remove this plugin from datasette's plugin manager (tests)."""
    if pm.get_plugin(PLUGIN_NAME) is not None:
        pm.unregister(name=PLUGIN_NAME)
