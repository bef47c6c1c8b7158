"""Exchange records: what went over the wire, for teaching and debugging.

Each HTTP request and its answer becomes an :class:`Exchange` (headers with credentials
redacted, body summaries, the parts of a multipart answer); a :class:`Recorder` keeps the last
ones (``client.history``) and prints each to the files of an active ``client.trace()``.
Nothing here sends a request.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import requests

from ..standard import multipart

__all__ = [
    "PREVIEW_BYTES",
    "Exchange",
    "PartInfo",
    "Recorder",
    "body_summary",
    "human_size",
    "redact_headers",
    "redact_url",
    "secret_forms",
    "summarize_parts",
]

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_HEADER_WORDS = ("token", "api-key", "apikey", "secret", "password", "subscription-key")

PREVIEW_BYTES = 256 * 1024  # bodies up to this size are kept whole for the summary
_SUMMARY_CHARS = 4000  # the text summary of a body is cut here


_SUFFIXES = {"application/dicom": "dcm", "image/png": "png", "image/jpeg": "jpg",
             "image/gif": "gif", "application/octet-stream": "bin"}


def _shell_quote(text: str) -> str:
    """``text`` in single quotes for a POSIX shell."""
    return "'" + text.replace("'", "'\\''") + "'"


def _without_boundary(content_type: str) -> str:
    """A multipart Content-Type without its boundary (curl's ``--form`` adds its own)."""
    kept = [p for p in content_type.split(";") if not p.strip().lower().startswith("boundary=")]
    return ";".join(kept)


def human_size(n: int | None) -> str:
    if n is None:
        return "unknown size"
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000.0  # type: ignore[assignment]
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy ``headers`` with credentials replaced: ``Authorization: Bearer ***``."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname in ("authorization", "proxy-authorization"):
            scheme = str(value).split(" ", 1)[0] if " " in str(value) else ""
            out[name] = f"{scheme} ***" if scheme else "***"
        elif lname in _SECRET_HEADERS or any(w in lname for w in _SECRET_HEADER_WORDS):
            out[name] = "***"
        else:
            out[name] = str(value)
    return out


def redact_url(url: str) -> str:
    """Drop any ``user:password@`` from a URL."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass
class PartInfo:
    """One part of a multipart body as seen on the wire: its headers and its size in bytes."""

    headers: dict[str, str]
    size: int

    def __str__(self) -> str:
        head = "; ".join(f"{k}: {v}" for k, v in self.headers.items()) or "(no headers)"
        return f"{head}  [{human_size(self.size)}]"


def _pretty_json(data: Any, depth: int = 0) -> str:
    """JSON with the outer array and objects opened, each DICOM element on one line:
    ``"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}``."""
    pad = "  " * (depth + 1)
    end = "  " * depth
    if depth < 2 and isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        inner = ",\n".join(pad + _pretty_json(x, depth + 1) for x in data)
        return f"[\n{inner}\n{end}]"
    if depth < 2 and isinstance(data, dict) and data:
        inner = ",\n".join(
            f"{pad}{json.dumps(k, ensure_ascii=False)}: "
            + (_pretty_json(v, depth + 1) if depth == 0 and isinstance(v, dict | list)
               and not _looks_like_element(v) else json.dumps(v, ensure_ascii=False))
            for k, v in data.items()
        )
        return f"{{\n{inner}\n{end}}}"
    return json.dumps(data, ensure_ascii=False)


def _looks_like_element(value: Any) -> bool:
    return isinstance(value, dict) and "vr" in value


def _summarize_body(body: bytes, total: int | None, content_type: str | None) -> str:
    """Readable summary of a (possibly truncated) body: JSON pretty, text, or size."""
    if total is None:
        total = len(body)
    if total == 0:
        return "(empty body)"
    media = (content_type or "").split(";", 1)[0].strip().lower()
    complete = len(body) == total
    if complete and (media.endswith("json") or media == "" or media.startswith("text/")):
        text = body.decode("utf-8", errors="replace")
        if media.endswith("json") or (media == "" and text.lstrip()[:1] in ("{", "[")):
            with contextlib.suppress(ValueError):
                text = _pretty_json(json.loads(text))
        if media.endswith("json") or media.startswith("text/") or text.isprintable() or (
            text.replace("\n", "").replace("\t", "").replace("\r", "").isprintable()
        ):
            if len(text) > _SUMMARY_CHARS:
                rest = len(text) - _SUMMARY_CHARS
                text = f"{text[:_SUMMARY_CHARS]}\n... ({rest} more characters)"
            return text
    if complete and media.startswith("multipart/"):
        try:

            parts = multipart.decode(body, content_type or "")
            return summarize_parts(
                [PartInfo(dict(p.headers), len(p.content)) for p in parts], total
            )
        except Exception:  # a summary must never fail the call it describes
            pass
    return f"({human_size(total)} of {media or 'unknown type'})"


def summarize_parts(parts: Sequence[PartInfo], total: int | None = None) -> str:
    size = sum(p.size for p in parts) if total is None else total
    lines = [f"multipart body, {len(parts)} part{'s' if len(parts) != 1 else ''}, "
             f"{human_size(size)}"]
    shown = parts if len(parts) <= 12 else [*parts[:10], None, parts[-1]]
    for i, part in enumerate(shown, 1):
        if part is None:
            lines.append(f"  ... {len(parts) - 11} more parts ...")
            continue
        number = i if i <= 10 or len(parts) <= 12 else len(parts)
        lines.append(f"  part {number}: {part}")
    return "\n".join(lines)


@dataclass
class Exchange:
    """One HTTP request and its answer, recorded for teaching and debugging.

    ``request_headers`` are the headers actually sent, with credentials redacted
    (``Authorization: Bearer ***``). ``request_body`` and ``response_body`` are short readable
    summaries (pretty JSON cut after a few thousand characters, multipart part lists, sizes);
    ``parts`` lists the parts of a multipart answer (each part's headers and size) once read.
    ``status`` is None when no answer came (``error`` then says why). ``str(exchange)`` gives
    an HTTP transcript in the style of ``curl -v``; :meth:`curl` gives an equivalent command.
    """

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: str | None = None
    status: int | None = None
    reason: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    parts: list[PartInfo] = field(default_factory=list)
    elapsed: float | None = None
    attempt: int = 1
    error: str | None = None
    streamed: bool = False
    body_preview: bytes = field(default=b"", repr=False)
    body_size: int | None = field(default=None, repr=False)
    scrubber: Callable[[str], str] = field(default=lambda s: s, repr=False)
    body_files: list[tuple[str, str]] = field(default_factory=list)
    body_form: bool = False

    def keep_body(self, content: bytes, size: int | None = None) -> None:
        """Keep the answer's body for :attr:`response_body` (its start only when large);
        ``size`` is the size on the wire when ``content`` had secrets replaced."""
        self.body_size = len(content) if size is None else size
        self.body_preview = content if len(content) <= PREVIEW_BYTES else content[:4096]

    @property
    def response_body(self) -> str | None:
        """Summary of the answer's body (None when nothing was read)."""
        if self.parts:
            return self.scrubber(summarize_parts(self.parts))
        if self.streamed and not self.body_preview:
            return "(streamed body, not recorded)"
        if self.status is None:
            return None
        ctype = self.response_headers.get("Content-Type") or self.response_headers.get(
            "content-type"
        )
        return self.scrubber(_summarize_body(self.body_preview, self.body_size, ctype))

    def curl(self) -> str:
        """An equivalent ``curl`` command that runs as printed in a shell.

        A bearer token is written as ``$DICOMWEB_TOKEN`` (never the token itself). A body made
        of files names them: a multipart STOW as one ``--form "fileN=@PATH;type=..."`` per
        file (curl adds the boundary to the multipart Content-Type), a single file as
        ``--data-binary @PATH``. A body held only in memory cannot be named and is written as
        ``--data-binary @-`` (curl then reads it from standard input). A binary answer goes to
        a file (``--output``) instead of the terminal.
        """
        words = ["curl", "-X", self.method]
        for name, value in self.request_headers.items():
            lower = name.lower()
            if lower in ("user-agent", "accept-encoding", "connection", "content-length"):
                continue
            if lower == "content-type" and self.body_files and self.body_form:
                value = _without_boundary(value)
            if lower == "authorization" and value.startswith("Bearer "):
                words += ["-H", f'"{name}: Bearer $DICOMWEB_TOKEN"']
                continue
            words += ["-H", _shell_quote(f"{name}: {value}")]
        if self.body_files and self.body_form:
            for number, (path, media) in enumerate(self.body_files, 1):
                words += ["--form", _shell_quote(f"file{number}=@{path};type={media}")]
        elif self.body_files:
            words += ["--data-binary", _shell_quote("@" + self.body_files[0][0])]
        elif self.request_body is not None:
            words += ["--data-binary", "@-"]
        output = self.output_name()
        if output:
            words += ["--output", output]
        words.append(_shell_quote(self.url))
        return " ".join(words)

    def output_name(self) -> str | None:
        """The file :meth:`curl` writes a binary answer to (None for JSON, text or no body).

        The answer's Content-Type decides, or without an answer the request's Accept header.
        """
        media = (self.response_headers.get("Content-Type")
                 or self.response_headers.get("content-type") or "")
        if not media or self.status is None or self.status >= 300:
            media = next((v for k, v in self.request_headers.items()
                          if k.lower() == "accept"), "")
        media = media.split(",", 1)[0].split(";", 1)[0].strip().lower()
        if self.method not in ("GET", "POST") or not media or media.endswith("json") or (
                media.startswith("text/") or media == "*/*"):
            return None
        suffix = _SUFFIXES.get(media) or ("multipart" if media.startswith("multipart/")
                                          else "bin")
        return f"answer.{suffix}"

    def transcript(self) -> str:
        """The exchange as text: ``>`` request lines, ``<`` answer lines, then the body."""
        split = urlsplit(self.url)
        target = split.path + (f"?{split.query}" if split.query else "")
        lines = [f"> {self.method} {target} HTTP/1.1", f"> Host: {split.netloc}"]
        lines += [f"> {k}: {v}" for k, v in self.request_headers.items() if k.lower() != "host"]
        lines.append(">")
        if self.request_body is not None:
            lines += [f"  {line}" for line in self.request_body.splitlines()]
        if self.status is None:
            lines.append(f"* no answer: {self.error or 'unknown error'}")
        else:
            took = f"  ({self.elapsed:.3f} s)" if self.elapsed is not None else ""
            retry = f"  [attempt {self.attempt}]" if self.attempt > 1 else ""
            lines.append(f"< HTTP/1.1 {self.status} {self.reason}{took}{retry}")
            lines += [f"< {k}: {v}" for k, v in self.response_headers.items()]
            lines.append("<")
            body = self.response_body
            if body:
                lines += [f"  {line}" for line in body.splitlines()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.transcript()

    def _repr_html_(self) -> str:
        status = "no answer" if self.status is None else f"{self.status} {self.reason}"
        color = "#2e7d32" if self.status and self.status < 400 else "#c62828"
        return (
            "<div class='dicomframes-exchange'>"
            f"<b>{html.escape(self.method)}</b> <code>{html.escape(self.url)}</code> "
            f"&rarr; <b style='color:{color}'>{html.escape(status)}</b>"
            f"<pre style='font-size:90%;white-space:pre-wrap'>{html.escape(self.transcript())}"
            "</pre></div>"
        )


def body_summary(data: Any, headers: Mapping[str, str]) -> str | None:
    """A readable summary of a request body (None without a body); streams are not read."""
    if data is None:
        return None
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, bytes | bytearray | memoryview):
        media = (ctype or "").split(";", 1)[0].strip().lower()
        if media.startswith("multipart/"):
            try:
                parts = multipart.decode(data, ctype or "")
                infos = [PartInfo(dict(p.headers), len(p.content)) for p in parts]
                return summarize_parts(infos, len(data))
            except Exception:  # a summary must never fail the request
                pass
        return _summarize_body(bytes(data[:PREVIEW_BYTES]), len(data), ctype)
    length = next((v for k, v in headers.items() if k.lower() == "content-length"), None)
    if length is None:
        with contextlib.suppress(Exception):
            length = str(requests.utils.super_len(data) or "") or None
    size = f", {human_size(int(length))}" if length and length.isdigit() else ""
    return f"({ctype or 'body'} streamed{size})"


def secret_forms(secret: str) -> list[str]:
    """``secret`` as a server may echo it: literal, percent-encoded, and base64 (standard and
    URL-safe alphabets, with and without padding), the longest first so none is left half
    replaced."""
    raw = secret.encode("utf-8")
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe="")}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        forms.update((text, text.rstrip("=")))
    return sorted((f for f in forms if f), key=len, reverse=True)


class Recorder:
    """The last exchanges (``history``), the files of active traces, and the secrets that
    are replaced by ``***`` in whatever is shown (in each form of :func:`secret_forms`)."""

    def __init__(self, history_size: int, secrets: Sequence[str] = ()) -> None:
        self.history: deque[Exchange] = deque(maxlen=history_size)
        self.trace_files: list[IO[str]] = []
        self.secrets: list[str] = []
        self._lock = threading.Lock()
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str) -> None:
        """Replace ``secret`` (each of its forms) by ``***`` from now on."""
        if secret:
            forms = set(self.secrets) | set(secret_forms(secret))
            self.secrets = sorted(forms, key=len, reverse=True)

    def remember(self, secret: str) -> None:
        """Scrub ``secret`` too from now on (e.g. a token just refreshed)."""
        if secret and secret not in self.secrets:
            self.secrets.append(secret)

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def scrub_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """``headers`` with credentials redacted by name (:func:`redact_headers`) and every
        secret value replaced by ``***`` wherever it appears (e.g. a token a server echoes)."""
        return {name: self.scrub(value) for name, value in redact_headers(headers).items()}

    def scrub_bytes(self, data: bytes) -> bytes:
        """``data`` with every secret replaced by ``***``."""
        for secret in self.secrets:
            data = data.replace(secret.encode("utf-8"), b"***")
        return data

    def record(self, exchange: Exchange) -> None:
        """Add ``exchange`` to the history (once)."""
        with self._lock:
            if not self.history or self.history[-1] is not exchange:
                self.history.append(exchange)

    def finish(self, exchange: Exchange) -> None:
        """Announce a completed exchange to every active trace."""
        for file in list(self.trace_files):
            print(exchange.transcript(), file=file)
            print(file=file, flush=True)

    @contextlib.contextmanager
    def tracing(self, file: IO[str] | None) -> Iterator[None]:
        """Print the exchanges completed inside the ``with`` block to ``file`` (or stdout)."""
        self.trace_files.append(file if file is not None else sys.stdout)
        try:
            yield
        finally:
            self.trace_files.pop()
