"""Bulk STOW-RS: discover DICOM files, batch them, stream them in parallel, report each one.

:func:`store` is what :meth:`dicomframes.Client.store` calls. It takes paths, folders
(recursive), glob patterns, zip files, pydicom Datasets and raw bytes, mixed, and returns a
DataFrame with one row per input and its outcome (``stored``, ``already stored``, ``failed``,
``skipped``). A file that is not DICOM becomes a ``failed`` row and never stops the rest.

The steps are public so that a notebook can show them one at a time:

* :func:`~dicomframes.client.discover.discover` expands the items and reads only the header of
  each file (no pixel data);
* :func:`~dicomframes.client.batches.plan_batches` groups the instances into requests by count
  and by bytes;
* :func:`~dicomframes.client.batches.post_batch` sends one ``multipart/related`` request,
  streamed from disk, and reads the server's answer;
* :func:`existing_instances` asks the server which instances it already has (``skip_existing``).

All of them are importable from here as well.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..convert.tables import STRING_DTYPE
from ..errors import BadRequest, NotFound
from ..standard.stow import ALREADY_EXISTS, OUT_OF_RESOURCES, REASONS
from ..standard.uids import is_valid_uid, validate_uid
from .batches import (
    NOT_ACKNOWLEDGED,
    OUT_OF_SPACE,
    batch_size_for,
    group_batches,
    out_of_resources,
    plan_batches,
    post_batch,
)
from .concurrency import throttled_so_far, workers_for
from .discover import (
    ALREADY_STORED,
    FAILED,
    SKIPPED,
    STORED,
    Instance,
    discover,
    expand,
    read_header,
    short_error,
)
from .surface import DicomwebClient as Client

if TYPE_CHECKING:
    import pandas

__all__ = [
    "ALREADY_EXISTS",
    "ALREADY_STORED",
    "COLUMNS",
    "FAILED",
    "NOT_ACKNOWLEDGED",
    "REASONS",
    "SKIPPED",
    "STORED",
    "Instance",
    "Progress",
    "discover",
    "existing_instances",
    "expand",
    "plan_batches",
    "post_batch",
    "store",
    "summary_text",
]

#: Columns of the DataFrame that :func:`store` returns, in order.
COLUMNS = [
    "source",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "status",
    "reason",
    "message",
    "RetrieveURL",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where an upload stands; passed to the ``callback`` of :func:`store` after each request."""

    instances_done: int
    instances_total: int
    bytes_done: int
    bytes_total: int
    counts: Mapping[str, int]


# ---- what the server already has --------------------------------------------------------------


def existing_instances(client: Client, uids_by_study: Mapping[str, Iterable[str]],
                       chunk: int = 50) -> set[str]:
    """Return the SOPInstanceUIDs among ``uids_by_study`` that the server already has.

    Asks QIDO-RS ``/studies/{study}/instances`` with UID lists (``SOPInstanceUID=a,b,c``),
    ``chunk`` UIDs per request; a server that refuses UID lists (400) is asked for every
    instance of the study instead.
    """
    present: set[str] = set()
    for study, uids in uids_by_study.items():
        wanted = sorted({u for u in uids if is_valid_uid(u)})
        if not is_valid_uid(study) or not wanted:
            continue
        try:
            for start in range(0, len(wanted), chunk):
                part = wanted[start:start + chunk]
                df = client.search_instances(study=study, SOPInstanceUID=part, limit=len(part))
                present |= _uids_in(df) & set(part)
        except NotFound:
            continue
        except BadRequest:
            try:
                present |= _uids_in(client.search_instances(study=study)) & set(wanted)
            except NotFound:
                continue
    return present


def _uids_in(df: pandas.DataFrame) -> set[str]:
    if df is None or len(df) == 0 or "SOPInstanceUID" not in df.columns:
        return set()
    return {str(u) for u in df["SOPInstanceUID"].dropna()}



# ---- the whole upload ----------------------------------------------------------------------


def store(
    client: Client,
    items: Any,
    study: str | None = None,
    *,
    batch_size: int = 100,
    batch_bytes: int = 64 << 20,
    workers: int | None = None,
    skip_existing: bool = False,
    progress: bool = True,
    callback: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    follow_symlinks: bool = False,
) -> pandas.DataFrame:
    """Store DICOM instances on the server of ``client`` (STOW-RS) and report each one.

    Parameters
    ----------
    items:
        Paths, folders (recursive), glob patterns, zip files, pydicom Datasets or bytes, mixed
        (see :func:`discover`). Files are streamed from disk, never a whole request in memory.
    study:
        Post to ``/studies/{study}``: the server then refuses instances of other studies.
    batch_size, batch_bytes:
        Most instances and about the most bytes per request.
    workers:
        Requests sent in parallel (default: 4 on a local link, more across a network to
        hide the round trip the client has measured, at most 16).
    skip_existing:
        Ask the server first which instances it has and send only the others (``skipped``
        rows), so an interrupted upload resumes without sending anything twice.
    progress:
        Show a tqdm progress bar (a widget in Jupyter, text elsewhere).
    callback:
        Called with a :class:`Progress` after each request (from the calling thread).
    cancel:
        A :class:`threading.Event`; once set, requests not yet started are not sent (their
        rows are ``skipped`` with "cancelled before sending"); requests under way finish.
    follow_symlinks:
        Follow symbolic links inside folders that point out of them (by default they are
        ``skipped`` rows saying where they point).

    Returns
    -------
    A DataFrame with one row per input instance and the columns :data:`COLUMNS`: ``status`` is
    ``stored``, ``already stored``, ``failed`` or ``skipped``; ``reason`` the DICOM status
    code (nullable integer); ``message`` says why; ``RetrieveURL`` where the server keeps it.
    ``df.attrs["summary"]`` counts each status and gives the requests sent, the bytes sent
    (request bodies), the seconds taken and the requests the server throttled (429/503,
    waited for and sent again).
    Instances the same upload already contains (same SOPInstanceUID) are ``skipped``.

    A server out of resources (FailureReason 0xA700, or HTTP 507: disk full) stops the upload:
    what it refused and everything not yet sent is ``failed`` with reason 0xA700, and nothing
    is resent one by one.

    Headers are read while the first requests are already under way: the calling thread
    reads the next batch's headers while ``workers`` threads send the previous ones.
    """
    started = time.perf_counter()
    if study is not None:
        validate_uid(study, "study")
    if workers is None:
        workers = workers_for(client, 4, 16)
    if workers < 1:
        raise ValueError("workers must be at least 1")
    throttled_before = throttled_so_far(client)
    instances = expand(items, follow_symlinks=follow_symlinks)
    candidates = [inst for inst in instances if inst.status is None]
    size = batch_size_for(len(candidates), batch_size, batch_bytes, workers)
    tracker = _Tracker(len(candidates), sum(i.size for i in candidates), progress, callback)
    first: dict[str, Instance] = {}
    copies: dict[str, list[Instance]] = {}

    def ready() -> Iterator[Instance]:
        for inst in candidates:
            if cancel is not None and cancel.is_set():
                inst.skip("cancelled before sending")
            else:
                read_header(inst)
            uid = inst.sop_instance_uid or ""
            if inst.status is None and uid in first:
                inst.skip(f"same SOPInstanceUID as {first[uid].source} in this upload")
                copies.setdefault(uid, []).append(inst)
            if inst.status is not None:
                tracker.settled([inst])
                continue
            first[uid] = inst
            yield inst

    sender = _Sender(client, study, workers, skip_existing, cancel, tracker)
    try:
        sender.run(group_batches(ready(), size, batch_bytes))
        # A copy whose first occurrence failed (e.g. a truncated file) gets its own chance.
        retry = _second_chances(list(first.values()), copies)
        while retry:
            tracker.add(len(retry), sum(i.size for i in retry))
            size = batch_size_for(len(retry), batch_size, batch_bytes, workers)
            sender.run(group_batches(retry, size, batch_bytes))
            retry = _second_chances(retry, copies)
    finally:
        tracker.close()
    result = _result(instances, sender.requests, tracker.bytes_sent,
                     time.perf_counter() - started)
    result.attrs["summary"]["throttled"] = throttled_so_far(client) - throttled_before
    return result


def _second_chances(sent: list[Instance], copies: dict[str, list[Instance]]) -> list[Instance]:
    retry = []
    for inst in sent:
        uid = inst.sop_instance_uid or ""
        if inst.status != FAILED or not copies.get(uid):
            continue
        if inst.message.startswith("request failed"):
            continue  # no answer from the server: a copy would fare no better
        replacement = copies[uid].pop(0)
        replacement.status, replacement.message = None, ""
        for other in copies[uid]:
            other.message = f"same SOPInstanceUID as {replacement.source} in this upload"
        retry.append(replacement)
    return retry


class _Tracker:
    """Counts what is done, drives the progress bar and calls the callback."""

    def __init__(self, instances: int, nbytes: int, progress: bool,
                 callback: Callable[[Progress], None] | None) -> None:
        self.instances_total = instances
        self.bytes_total = nbytes
        self.instances_done = 0
        self.bytes_done = 0
        self.bytes_sent = 0
        self.counts: dict[str, int] = {}
        self.callback = callback
        self._lock = threading.Lock()
        self.bar = _progress_bar(nbytes, instances) if progress and instances else None

    def add(self, instances: int, nbytes: int) -> None:
        with self._lock:
            self.instances_total += instances
            self.bytes_total += nbytes
            if self.bar is not None:
                self.bar.total = self.bytes_total
                self.bar.refresh()

    def sent_bytes(self, n: int) -> None:
        """Called by the sending threads as body chunks go out."""
        with self._lock:
            self.bytes_sent += n
            self.bytes_done += n
            if self.bar is not None:
                self.bar.update(n)

    def settled(self, instances: Sequence[Instance], sent: int = 0) -> None:
        """``instances`` have their outcome; ``sent`` of their bytes were already counted."""
        unsent = sum(i.size for i in instances) - sent
        with self._lock:
            self.instances_done += len(instances)
            for inst in instances:
                key = inst.status or FAILED
                self.counts[key] = self.counts.get(key, 0) + 1
            if unsent > 0:  # not sent (failed or skipped): the bar moves on all the same
                self.bytes_done += unsent
                if self.bar is not None:
                    self.bar.update(unsent)
            if self.bar is not None:
                self.bar.set_postfix_str(self._postfix(), refresh=True)
            snapshot = Progress(self.instances_done, self.instances_total, self.bytes_done,
                                self.bytes_total, dict(self.counts))
        if self.callback is not None:
            self.callback(snapshot)

    def _postfix(self) -> str:
        """Counts only what the server acknowledged as stored; failures and skips apart."""
        stored = self.counts.get(STORED, 0) + self.counts.get(ALREADY_STORED, 0)
        text = f"{stored}/{self.instances_total} stored"
        for key in (SKIPPED, FAILED):
            if self.counts.get(key):
                text += f", {self.counts[key]} {key}"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Sender:
    """Sends batches with at most ``workers`` requests in flight; pulls the next batch from
    its (lazy) iterator only when a worker is free."""

    def __init__(self, client: Client, study: str | None, workers: int, skip_existing: bool,
                 cancel: threading.Event | None, tracker: _Tracker) -> None:
        self.client = client
        self.study = study
        self.workers = workers
        self.skip_existing = skip_existing
        self.cancel = cancel
        self.tracker = tracker
        self.requests = 0
        self.full = threading.Event()  # the server said it is out of resources: stop sending

    def _send(self, batch: list[Instance]) -> tuple[int, int]:
        if self.cancel is not None and self.cancel.is_set():
            for inst in batch:
                inst.skip("cancelled before sending")
            return 0, 0
        if self.full.is_set():
            for inst in batch:
                inst.fail(f"not sent: {OUT_OF_SPACE}", OUT_OF_RESOURCES)
            return 0, 0
        todo = batch
        if self.skip_existing:
            by_study: dict[str, list[str]] = {}
            for inst in batch:
                by_study.setdefault(inst.study_instance_uid or "", []).append(
                    inst.sop_instance_uid or "")
            try:
                present = existing_instances(self.client, by_study)
            except Exception as exc:  # the check failed: send them; duplicates are harmless
                log.warning("could not ask the server which instances it has (%s); sending "
                            "them all", short_error(exc))
                present = set()
            for inst in batch:
                if inst.sop_instance_uid in present:
                    inst.skip("already on the server")
            todo = [inst for inst in batch if inst.status is None]
        if not todo:
            return 0, 0
        sent = [0]

        def on_bytes(n: int) -> None:
            sent[0] += n
            self.tracker.sent_bytes(n)

        post_batch(self.client, todo, self.study, on_bytes=on_bytes)
        if out_of_resources(todo):
            self.full.set()
        return 1, sent[0]

    def run(self, batches: Iterator[list[Instance]]) -> None:
        with ThreadPoolExecutor(max_workers=self.workers,
                                thread_name_prefix="dicomframes-upload") as pool:
            running: dict[Future[tuple[int, int]], list[Instance]] = {}
            exhausted = False
            while True:
                while not exhausted and len(running) < self.workers:
                    batch = next(batches, None)
                    if batch is None:
                        exhausted = True
                    else:
                        running[pool.submit(self._send, batch)] = batch
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    batch = running.pop(future)
                    try:
                        requests, sent = future.result()
                    except Exception as exc:  # a bug must not lose the other rows
                        requests, sent = 0, 0
                        for inst in batch:
                            if inst.status is None:
                                inst.fail(f"upload error: {short_error(exc)}")
                    self.requests += requests
                    self.tracker.settled(batch, sent)


def _progress_bar(total_bytes: int, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"STOW {total} file{'s' if total != 1 else ''}", leave=True)


def _result(instances: list[Instance], requests_sent: int, total_bytes: int,
            seconds: float) -> pandas.DataFrame:
    import pandas as pd

    rows = [inst.row() for inst in instances]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["reason"] = pd.array([r["reason"] for r in rows], dtype="Int64")
    # the package's text dtype, as in every other DataFrame it returns (round-trips Parquet)
    for column in COLUMNS:
        if column != "reason":
            df[column] = df[column].astype(STRING_DTYPE)
    df["message"] = df["message"].fillna("")
    counts = {s: int((df["status"] == s).sum()) for s in (STORED, ALREADY_STORED, FAILED,
                                                           SKIPPED)}
    df.attrs["summary"] = {
        **counts,
        "instances": len(df),
        "requests": requests_sent,
        "bytes": total_bytes,
        "seconds": round(seconds, 3),
    }
    return df


def summary_text(df: pandas.DataFrame) -> str:
    """One line that counts the outcomes of a :func:`store` result."""
    s = df.attrs.get("summary") or {}
    parts = [f"{s.get(k, 0)} {k}" for k in (STORED, ALREADY_STORED, SKIPPED, FAILED)
             if s.get(k)]
    text = ", ".join(parts) or "nothing to store"
    if s.get("seconds") is not None:
        text += f" in {s['seconds']:.1f} s"
    return text
