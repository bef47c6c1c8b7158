"""QIDO-RS on the client: search filters to query parameters, the query string, and paging.

:func:`qido_params` turns Python filter values (dates, ranges, lists, keywords or tags) into
QIDO-RS parameters; :func:`query_string` percent-encodes them the way DICOMweb servers expect;
:func:`page_params` and :func:`fresh_rows` are the paging rules written once (a page's
parameters, repeated rows dropped); :class:`Pager` pages a search for ``client.search_*``
(learning a page cap), :func:`walk_pages` the archive reader's searches
(:class:`dicomframes.client.partitions.Reader`). No HTTP here: the pager is given the function
that fetches one page.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .. import errors
from ..standard import tags
from ..standard.attributes import PLURAL, SEARCHABLE, UID_KEYWORDS
from ..standard.temporal import python_temporal, query_date, query_datetime, query_time
from ..standard.uids import validate_uid

__all__ = ["walk_pages"]

# Characters sent as they are in a query value. Orthanc does not percent-decode query values,
# so DICOM wildcards and list separators must arrive raw; everything else is percent-encoded.
QUERY_SAFE = "*?^,-._~:/@!$'()"

_TEMPORAL: dict[str, Callable[[Any], str]] = {
    "DA": query_date, "TM": query_time, "DT": query_datetime,
}
_INTEGER_VRS = ("IS", "SS", "US", "SL", "UL", "SV", "UV")


def _format_one(value: Any, vr: str, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    formatter = _TEMPORAL.get(vr)
    if formatter is not None:
        return formatter(value)
    if vr == "UI":
        text = str(value).strip()
        return validate_uid(text, name) if text else text
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if vr in _INTEGER_VRS else str(value)
    return str(value)


def _format_value(value: Any, vr: str, name: str) -> str | None:
    """A filter value in QIDO form; None means "leave this filter out"."""
    if isinstance(value, tuple) and len(value) == 2 and vr in _TEMPORAL:
        start, end = (python_temporal(v) for v in value)
        if start is None and end is None:
            return None
        left = "" if start is None else _format_one(start, vr, name)
        right = "" if end is None else _format_one(end, vr, name)
        return f"{left}-{right}"
    if isinstance(value, str | bytes):
        return _format_one(value.decode() if isinstance(value, bytes) else value, vr, name)
    if isinstance(value, Iterable):
        items = [_format_one(v, vr, name) for v in value]
        if not items:
            raise ValueError(f"empty list given for the filter {name}")
        return ",".join(items)
    return _format_one(value, vr, name)


def _attribute_name(key: Any) -> tuple[str, str]:
    """(name to send, VR) for a filter key given as keyword, tag, or a dotted sequence path."""
    names = []
    vr = "UN"
    pieces = key.split(".") if isinstance(key, str) else [key]
    for piece in pieces:
        try:
            tag = tags.tag_of(piece)
        except KeyError:
            close = tags.closest_keywords(str(piece), SEARCHABLE)
            hint = (f"did you mean {' or '.join(close)}?" if close else
                    "use a keyword (PatientName) or an 8-hex-digit tag (00100010)")
            raise ValueError(
                f"unknown DICOM attribute {piece!r} in the search filters: {hint}") from None
        is_keyword = isinstance(piece, str) and piece[:1].isalpha() and (
            tags.keyword_of(tag) == piece
        )
        names.append(piece if is_keyword else tags.tag_hex(tag))
        try:
            vr = tags.vr_of(tag)
        except KeyError:
            vr = "UN"
    return ".".join(names), vr


def _includefield(value: Any) -> str:
    if isinstance(value, str):
        if value.lower() == "all":
            return "all"
        value = [v for v in value.split(",") if v.strip()]
    return ",".join(_attribute_name(v.strip() if isinstance(v, str) else v)[0] for v in value)


def qido_params(filters: Mapping[str, Any]) -> dict[str, str]:
    """Turn search filters into QIDO-RS query parameters (values not yet percent-encoded).

    Keys are DICOM keywords (``PatientName``), tags (``"00100010"``, ``"(0010,0010)"``) or
    dotted sequence paths; keywords are sent as given, other forms as 8-hex-digit tags.
    Values: ``date``/``datetime``/``time`` objects or strings (ISO forms are converted, DICOM
    forms pass through); a ``(start, end)`` tuple is a range, either end may be None
    (``"20200101-"``); a list is a comma-separated list (UIDs are validated); ``None`` drops
    the filter. Special keys: ``limit``, ``offset``, ``fuzzymatching`` (bool) and
    ``includefield`` (a list of attributes or ``"all"``).
    """
    params: dict[str, str] = {}
    for key, value in filters.items():
        if value is None:
            continue
        lower = key.lower()
        if lower == "includefield":
            params["includefield"] = _includefield(value)
        elif lower == "fuzzymatching":
            if isinstance(value, str):
                value = value.strip().lower() in ("1", "true", "yes")
            params["fuzzymatching"] = "true" if value else "false"
        elif lower in ("limit", "offset"):
            number = int(value)
            if number < 0:
                raise ValueError(f"{lower} must not be negative, got {value!r}")
            params[lower] = str(number)
        else:
            name, vr = _attribute_name(key)
            text = _format_value(value, vr, name)
            if text is not None:
                params[name] = text
    return params


def query_string(params: Mapping[str, Any]) -> str:
    """``params`` as a query string: DICOM wildcards (``*?^,``) stay raw, lists become
    comma-separated, booleans ``true``/``false``, None values are left out."""
    pieces = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif not isinstance(value, str) and isinstance(value, Iterable):
            value = ",".join(str(v) for v in value)
        pieces.append(f"{quote(str(key), safe=QUERY_SAFE)}={quote(str(value), safe=QUERY_SAFE)}")
    return "&".join(pieces)


# ---- paging ---------------------------------------------------------------------------------


def refused_limit(error: Exception, asked: int) -> int | None:
    """The page size to ask instead when a server refused ``limit=asked`` (a 400 that names
    ``limit``, as the Azure DICOM service answers a limit over 200): the largest number below
    ``asked`` its message names (Azure: "between 1 and 200"), else 100; None when the error is
    about something else."""
    if not isinstance(error, errors.DICOMwebError) or error.status != 400 or asked <= 1:
        return None
    if "limit" not in error.message.lower():
        return None
    named = [int(n) for n in re.findall(r"\d+", error.message) if 1 < int(n) < asked]
    return max(named) if named else min(100, asked - 1)


Page = list[dict]


def page_params(params: Mapping[str, str], limit: int, offset: int = 0) -> dict[str, str]:
    """The parameters of one page: ``params`` with ``limit`` (and ``offset`` when not 0)."""
    page = {**params, "limit": str(limit)}
    if offset:
        page["offset"] = str(offset)
    return page


def fresh_rows(rows: Page, seen: set[str], uid_key: str) -> Page:
    """The rows not seen before (added to ``seen``), told apart by their ``uid_key`` value (8
    hex digits: the UID of the level searched), else by their whole content."""
    fresh = []
    for obj in rows:
        key = _uid_of(obj, uid_key) or json.dumps(obj, sort_keys=True)
        if key not in seen:
            seen.add(key)
            fresh.append(obj)
    return fresh


def _uid_of(obj: Mapping[str, Any], key: str) -> str | None:
    element = obj.get(key) if isinstance(obj, Mapping) else None
    values = element.get("Value") if isinstance(element, Mapping) else None
    return str(values[0]) if values and values[0] is not None else None


@dataclass(frozen=True)
class PageAnswer:
    """One page of a search: the rows answered, those not seen on earlier pages, and the
    ``limit`` and ``offset`` it was asked with."""

    rows: Page
    fresh: Page
    asked: int
    offset: int


def walk_pages(fetch: Callable[[dict[str, str]], Page], params: Mapping[str, str],
               uid_key: str, size: Callable[[], int], offset: int = 0
               ) -> Generator[PageAnswer, None, None]:
    """The pages of a search, one request each, until the caller stops or ``size()`` (rows
    to ask for next) is 0; the caller decides what ends the search (a short page, a page of
    repeats, a count). Searches (:class:`Pager`) and the archive reader
    (:class:`dicomframes.client.partitions.Reader`) both walk with it."""
    seen: set[str] = set()
    while True:
        want = size()
        if want <= 0:
            return
        query = page_params(params, want, offset)
        rows = fetch(query)  # may lower query["limit"]: a server that refused the size asked
        yield PageAnswer(rows, fresh_rows(rows, seen, uid_key), int(query["limit"]), offset)
        offset += len(rows)


@dataclass
class Pager:
    """Fetches a search page by page (``limit``/``offset``) until the answer runs short.

    ``fetch`` gets one page's parameters and returns its rows. Rows already seen (same UID of
    ``level``) are dropped; a page of nothing but repeats means the server ignores ``offset``
    and ends the search with a warning, as does reaching ``max_pages``. ``progress`` shows a
    tqdm bar once a search takes more than one page. A search for one UID of its own level
    (``/studies?StudyInstanceUID=...``) matches one row at most, so it is sent as asked,
    without ``limit``.
    """

    fetch: Callable[[dict[str, str]], Page]
    level: str
    page_size: int
    max_pages: int
    progress: bool = False
    server: str = "the server"
    capabilities: dict[str, Any] | None = None  # the client's: "page_cap" once learned

    def search(self, params: Mapping[str, str], limit: int | None = None,
               offset: int = 0) -> Page:
        """Every row of the search (at most ``limit``), starting at ``offset``.

        A page shorter than asked ends the search, unless its length is a round number (a
        multiple of 50) and the server's page cap is not known yet: then the next page tells
        whether the server caps ``limit`` there (as the Azure DICOM service does at 200), and
        the cap is kept in the client's ``capabilities["page_cap"]``.
        """
        if limit is None and not offset and self._one_uid(params):
            return self.fetch(dict(params))
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        known = self.capabilities if self.capabilities is not None else {}
        results: Page = []
        bars: list[Any] = []  # the progress bar, once a second page is asked for
        candidate: int | None = None  # the length of a short page that may be a page cap

        def size() -> int:  # rows to ask for next: a page, or what is left of ``limit``
            page = min(self.page_size, int(known.get("page_cap") or self.page_size))
            want = page if limit is None else min(page, limit - len(results))
            if want > 0 and results and not bars and self.progress:
                bars.append(self._bar(len(results), limit))
            return want

        uid_key = tags.tag_hex(tags.tag_of(UID_KEYWORDS[self.level]))
        pages = walk_pages(lambda query: self._get(query, known), params, uid_key, size, offset)
        try:
            for count, page in enumerate(pages, start=1):
                asked = page.asked
                if candidate is not None and page.rows:  # rows after a short page: a cap
                    known["page_cap"] = candidate
                    asked = min(asked, candidate)  # this page was cut by it too
                candidate = None
                if page.rows and not page.fresh:
                    self._warn(f"the server at {self.server} answered offset={page.offset} "
                               "with rows it had already sent (it seems to ignore 'offset'); "
                               f"stopping after {len(results)} results")
                    break
                results.extend(page.fresh)
                for bar in bars:
                    bar.update(len(page.fresh))
                if len(page.rows) != asked:
                    # short page: the end (or a cap, to be checked); longer than asked: the
                    # server ignores limit
                    if not self._may_be_capped(len(page.rows), asked, known):
                        break
                    candidate = len(page.rows)
                if count >= self.max_pages:
                    self._warn(f"search stopped after {count} pages ({len(results)} results, "
                               "more remain): raise client.max_pages to fetch more, or pass "
                               "limit= to ask for the first rows only")
                    break
        finally:
            pages.close()
            for bar in bars:
                bar.close()
        return results

    def _get(self, query: dict[str, str], known: dict[str, Any]) -> Page:
        """One page; a server that refuses ``query["limit"]`` as too large is asked again with
        the size it accepts (learned as its page cap, and written back into ``query``)."""
        while True:
            try:
                return self.fetch(dict(query))
            except errors.DICOMwebError as exc:
                smaller = refused_limit(exc, int(query["limit"]))
                if smaller is None:
                    raise
                known["page_cap"] = smaller
                query["limit"] = str(smaller)

    @staticmethod
    def _may_be_capped(count: int, asked: int, known: Mapping[str, Any]) -> bool:
        """Whether a page of ``count`` rows, fewer than ``asked``, may be cut by a page cap
        not learned yet (caps are round numbers)."""
        return 0 < count < asked and count % 50 == 0 and "page_cap" not in known

    def _one_uid(self, params: Mapping[str, str]) -> bool:
        """Whether ``params`` ask for one UID of the search's own level (at most one match)."""
        keyword = UID_KEYWORDS[self.level]
        value = params.get(keyword, params.get(tags.tag_hex(tags.tag_of(keyword))))
        return bool(value) and not any(c in str(value) for c in ",*?\\")

    @staticmethod
    def _warn(message: str) -> None:
        # stacklevel: Pager.search <- Client._search_objects <- Client._search <- search_* <-
        # the caller
        warnings.warn(message, RuntimeWarning, stacklevel=6)

    def _bar(self, initial: int, total: int | None) -> Any:
        from tqdm.auto import tqdm  # optional until a search takes several pages

        return tqdm(desc=f"search {PLURAL[self.level]}", unit=" rows", initial=initial,
                    total=total, leave=False)
