"""What the client accepts from a server: bounds on an answer's size, on how much a compressed
body may inflate and on the JSON it parses, each exceeded one a typed error naming the URL and
the limit (the header's is :func:`dicomframes.client.failures.malformed_head`).

The body of every answer is counted while it is read, never after: :class:`BoundingHook` is a
requests response hook that wraps ``response.raw`` in a :class:`BoundedBody`, so
``response.content``, ``iter_content`` and the multipart reader all stop at the limit, also
for the intermediate answers of a redirect. gzip and deflate bodies are inflated here, piece by
piece, so the bytes on the wire and the bytes they became are both known. Nothing here sends
a request.
"""

from __future__ import annotations

import contextlib
import resource
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import requests

from .. import errors
from ..standard import dicomjson
from .exchange import human_size, redact_url

__all__ = [
    "ACCEPT_ENCODING",
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_MAX_DECOMPRESSION_RATIO",
    "ERROR_BODY_BYTES",
    "JSON_MEMORY_FACTOR",
    "MAX_JSON_DEPTH",
    "RATIO_FLOOR",
    "SAFE_FAST_DEPTH",
    "BoundedBody",
    "BoundingHook",
    "bound_error_body",
    "bracket_depth",
    "check_limits",
    "memory_room",
    "next_part",
    "parse_json",
]

DEFAULT_MAX_ANSWER_BYTES = 512 * 2**20
"""The most bytes of one answer (or of one part of a multipart answer) held in memory."""
DEFAULT_MAX_DECOMPRESSION_RATIO = 500.0
"""The most a compressed body may inflate: zeros gzip about 1,000 times, DICOM JSON whose
instances repeat each other up to a few hundred times (300 measured on identical items)."""
RATIO_FLOOR = 8 * 2**20
"""Decoded bytes below which any ratio is accepted (a blank frame compresses ~1000 times)."""
JSON_MEMORY_FACTOR = 10
"""Parsed DICOM JSON takes about this many times the size of its text (measured: 6 to 8)."""
MAX_JSON_DEPTH = 1000
"""JSON nested deeper is refused by the parsers (orjson at 1024 levels, json at Python's
recursion limit, 1000 by default); DICOM JSON needs three levels per sequence level."""
SAFE_FAST_DEPTH = 256
"""Deeper JSON goes to Python's json, never to orjson (which crashes on very deep nesting)."""
ERROR_BODY_BYTES = 16 * 2**20
"""The most bytes of an error answer read (its message, a STOW answer's failed instances)."""
ACCEPT_ENCODING = "gzip, deflate"
"""The encodings asked for: the ones inflated, and counted, here."""

_CHUNK = 1 << 16


def check_limits(max_answer_bytes: int | None, max_decompression_ratio: float | None) -> None:
    """Refuse limits that are not positive numbers (None: no limit)."""
    if max_answer_bytes is not None and (isinstance(max_answer_bytes, bool)
                                         or int(max_answer_bytes) < 1):
        raise ValueError(f"max_answer_bytes must be a positive number of bytes or None, got "
                         f"{max_answer_bytes!r}")
    if max_decompression_ratio is not None and float(max_decompression_ratio) < 1:
        raise ValueError(f"max_decompression_ratio must be at least 1 or None, got "
                         f"{max_decompression_ratio!r}")


class _Inflater:
    """Inflates a gzip or deflate body piece by piece, no piece larger than ``step`` bytes.
    As urllib3 does, bytes after a complete gzip member that are not another member are
    ignored, and a "deflate" body without its zlib wrapper is taken raw."""

    def __init__(self, encoding: str) -> None:
        self.gzip = encoding in ("gzip", "x-gzip")
        self.zobj = zlib.decompressobj(16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS)
        self.started = False
        self.members = 0
        self.ended = False

    def feed(self, data: bytes, step: int) -> Iterator[bytes]:
        """The output of ``data`` (and of what is pending), in pieces of at most ``step``."""
        while not self.ended:
            try:
                out = self.zobj.decompress(data, step)
            except zlib.error:
                if self.gzip and self.members:
                    self.ended = True  # trailing bytes after a complete member
                    return
                if self.gzip or self.started:
                    raise
                self.zobj = zlib.decompressobj(-zlib.MAX_WBITS)
                out = self.zobj.decompress(data, step)
            self.started = True
            data = self.zobj.unconsumed_tail
            if self.zobj.eof and self.gzip:
                self.members += 1
                data = self.zobj.unused_data  # the next member of a multi-member gzip
                self.zobj = zlib.decompressobj(16 + zlib.MAX_WBITS)
            if out:
                yield out
            if not data and len(out) < step:  # all input used, no output pending
                return


class BoundedBody:
    """``response.raw`` of one answer, counting what it gives: past ``max_bytes`` decoded
    bytes since the last :meth:`mark` (the start, or the end of a multipart part), or a
    compressed body past ``max_ratio`` times its wire size, reading raises
    :class:`~dicomframes.errors.AnswerTooLarge`. Everything else is the wrapped object's."""

    def __init__(self, raw: Any, method: str, url: str, content_type: str, encoding: str,
                 max_bytes: int | None, max_ratio: float | None) -> None:
        self.raw = raw
        self.method = method
        self.url = url
        self.content_type = content_type
        self.encoding = encoding
        self.max_bytes = max_bytes
        self.max_ratio = max_ratio
        self.wire = 0
        self.decoded = 0
        self.since_mark = 0
        self.in_part = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def mark(self) -> None:
        """A multipart part ended: the size limit applies to the next one afresh."""
        self.since_mark = 0
        self.in_part = True

    def stream(self, amt: int | None = _CHUNK, decode_content: bool | None = None
               ) -> Iterator[bytes]:
        """The body in pieces of at most ``amt`` bytes, counted (see the class)."""
        step = amt or _CHUNK
        if not decode_content or self.encoding in ("", "identity"):
            for chunk in self.raw.stream(step, decode_content=decode_content):
                self.wire += len(chunk)
                self.count(chunk)
                yield chunk
            return
        if self.encoding not in ("gzip", "x-gzip", "deflate"):
            # An encoding not asked for: urllib3 inflates it; only the size is bounded.
            for chunk in self.raw.stream(step, decode_content=True):
                self.count(chunk)
                yield chunk
            return
        inflater = _Inflater(self.encoding)
        try:
            for chunk in self.raw.stream(step, decode_content=False):
                self.wire += len(chunk)
                for piece in inflater.feed(chunk, step):
                    self.count(piece)
                    yield piece
        except zlib.error as exc:
            raise errors.InvalidResponse(
                self.method, self.url, f"the answer's {self.encoding} body is corrupt ({exc})",
                self.content_type) from None

    def read(self, amt: int | None = None, decode_content: bool | None = None,
             **_: Any) -> bytes:
        """Up to ``amt`` bytes (all without it), counted; for callers that read, not stream."""
        out = bytearray()
        for piece in self.stream(amt or _CHUNK, decode_content=decode_content):
            out += piece
            if amt and len(out) >= amt:
                break
        return bytes(out)

    def count(self, piece: bytes) -> None:
        """Add ``piece`` to the counts; raise once a limit is passed."""
        self.decoded += len(piece)
        self.since_mark += len(piece)
        if self.max_bytes is not None and self.since_mark > self.max_bytes:
            what = "a part of the answer" if self.in_part else "the answer"
            raise errors.AnswerTooLarge(
                self.method, self.url, f"{what} is larger than max_answer_bytes="
                f"{self.max_bytes} ({human_size(self.max_bytes)}); reading stopped there "
                "(pass a larger max_answer_bytes= to connect() if the answer is expected)",
                self.max_bytes, self.since_mark, self.content_type)
        if (self.max_ratio is not None and self.decoded > RATIO_FLOOR
                and self.decoded > self.max_ratio * max(self.wire, 1)):
            raise errors.AnswerTooLarge(
                self.method, self.url, f"the answer's {self.encoding} body inflates more than "
                f"max_decompression_ratio={self.max_ratio:g} times ({human_size(self.wire)} "
                f"on the wire became more than {human_size(self.decoded)}); reading stopped "
                "there, a decompression bomb is likely", self.max_ratio, self.decoded,
                self.content_type)


class BoundingHook:
    """A requests response hook that bounds each answer's body (see :class:`BoundedBody`);
    the limits are read when the answer arrives, so changing them applies to the next one.

    It pickles (with the request that holds it, e.g. in the cause of an error crossing to a
    Dask client) as a hook without limits: a pickled request is never sent again."""

    def __init__(self, max_bytes: Callable[[], int | None],
                 max_ratio: Callable[[], float | None]) -> None:
        self.max_bytes = max_bytes
        self.max_ratio = max_ratio

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any
                 ) -> requests.Response:
        if not isinstance(response.raw, BoundedBody) and hasattr(response.raw, "stream"):
            response.raw = BoundedBody(
                response.raw, response.request.method or "GET", redact_url(response.url or ""),
                response.headers.get("Content-Type", ""),
                response.headers.get("Content-Encoding", "").strip().lower(),
                self.max_bytes(), self.max_ratio())
        return response

    def __reduce__(self) -> tuple[Any, ...]:
        return BoundingHook, (_no_limit, _no_limit)


def _no_limit() -> None:
    return None


def bound_error_body(response: requests.Response) -> None:
    """An error answer's body is read for its message: at most :data:`ERROR_BODY_BYTES`."""
    if isinstance(response.raw, BoundedBody):
        limit = response.raw.max_bytes
        response.raw.max_bytes = ERROR_BODY_BYTES if limit is None else min(limit,
                                                                            ERROR_BODY_BYTES)


def next_part(response: requests.Response) -> None:
    """A multipart part of ``response`` was read whole: bound the next one afresh."""
    if isinstance(response.raw, BoundedBody):
        response.raw.mark()


# ---- JSON ------------------------------------------------------------------------------------


def _status_kib(field: str, path: str) -> int | None:
    with contextlib.suppress(OSError, ValueError), open(path) as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def memory_room() -> int | None:
    """Bytes this process may still allocate: the room under its address-space limit
    (RLIMIT_AS) and the memory and swap the system has available, whichever is less; None
    when neither is known."""
    rooms = []
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    used = _status_kib("VmSize", "/proc/self/status")
    if soft != resource.RLIM_INFINITY and used is not None:
        rooms.append(soft - used)
    available = _status_kib("MemAvailable", "/proc/meminfo")
    if available is not None:
        rooms.append(available + (_status_kib("SwapFree", "/proc/meminfo") or 0))
    return min(rooms) if rooms else None


_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[{]}"))


def bracket_depth(body: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in ``body``, counting brackets inside strings too
    (so it may overstate, never understate, the JSON's depth), at C speed: the brackets are
    kept as +1 / -1 bytes and summed by numpy."""
    if body.count(b"[") + body.count(b"{") <= SAFE_FAST_DEPTH:
        return 0  # too few brackets to nest deeply: the usual small answer costs nothing more
    steps = np.frombuffer(body.translate(_BRACKETS, _NOT_BRACKETS), dtype=np.int8)
    return int(np.cumsum(steps, dtype=np.int32).max()) if len(steps) else 0


def parse_json(body: bytes, method: str, url: str, content_type: str = "",
               scrub: Callable[[bytes], bytes] | None = None) -> Any:
    """Parse a JSON answer of ``url``, bounded: a body that would not fit in the memory this
    process may use (about :data:`JSON_MEMORY_FACTOR` times its size) raises
    :class:`~dicomframes.errors.AnswerTooLarge` before any parser sees it; JSON nested deeper
    than the parser takes (:data:`MAX_JSON_DEPTH`) or invalid JSON raises
    :class:`~dicomframes.errors.InvalidResponse`, whose preview of the body is passed through
    ``scrub`` (no preview without it)."""
    needed = len(body) * JSON_MEMORY_FACTOR
    room = memory_room() if len(body) > _CHUNK * 64 else None  # small answers always fit
    if room is not None and needed > room:
        raise errors.AnswerTooLarge(
            method, url, f"the JSON answer of {human_size(len(body))} needs about "
            f"{human_size(needed)} to parse, more than the {human_size(max(room, 0))} this "
            "process may still use; not parsed (ask for fewer results per page, e.g. "
            "limit=, or give the process more memory)", room, len(body), content_type)
    preview = b"" if scrub is None else scrub(body[:200])
    try:
        return dicomjson.loads(body, fast=bracket_depth(body) <= SAFE_FAST_DEPTH)
    except MemoryError:
        raise errors.AnswerTooLarge(
            method, url, f"the JSON answer of {human_size(len(body))} did not fit in memory "
            "when parsed", None, len(body), content_type) from None
    except RecursionError:
        raise errors.InvalidResponse(
            method, url, f"the JSON answer is nested more than {MAX_JSON_DEPTH} levels deep, "
            "not DICOM JSON", content_type, preview) from None
    except ValueError as exc:  # json.JSONDecodeError and orjson's are ValueErrors
        raise errors.InvalidResponse(method, url, f"the answer is not valid JSON ({exc})",
                                     content_type, preview) from None
