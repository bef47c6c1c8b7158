"""Frames and volumes over WADO-RS, streamed into preallocated numpy arrays.

:meth:`Client.frames <dicomframes.client.Client.frames>` and :meth:`Client.volume
<dicomframes.client.Client.volume>` are thin wrappers around :func:`fetch_frames` and
:func:`fetch_volume`. What happens on the wire:

1. The attributes decoding needs (a :class:`~dicomframes.standard.pixeldesc.PixelDescription`,
   plus position, orientation and instance number for ordering) come from the instance's or
   series' ``/metadata`` once and are cached on the client
   (:mod:`dicomframes.client.metadata_cache`, which says when the cache is checked).
2. ``GET .../frames/1,2,...`` asks for ``transfer-syntax=*`` (whatever the server stores, no
   server-side transcoding, usually the fewest bytes); each part is decoded by its own
   Content-Type into its slot of an array allocated before the first byte arrives.
3. Fallbacks, each tried once: a part arrives in a syntax no local decoder handles -> ask the
   server to decode (the default syntax, Explicit VR Little Endian); the frames resource
   refuses (400/406/415/500/501: Orthanc answers 500 for big endian data and some RLE, 400 for
   native YBR_FULL_422) -> retrieve the instance as stored and decode its pixel data here with
   pydicom (the faithful answer; servers disagree on byte-swapping 32-bit big endian data);
   that fails too -> ask for the frames in the default syntax. Each fallback leaves a note in
   ``client.capabilities["frames_fallbacks"]``.

Everything HTTP goes through the client's public calls (auth, retries, recorded exchanges);
bytes become arrays in :mod:`dicomframes.convert.pixels`. A call that returns nothing where
something is
needed raises :class:`~dicomframes.errors.EmptyResponse` with the full URL.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from .. import errors
from ..convert.pixels import decode_frame, missing_decoder
from ..standard.attributes import NUMBER_OF_SERIES_INSTANCES
from ..standard.dicomjson import first_value
from ..standard.mediatypes import OCTET_STREAM
from ..standard.paths import ResourcePath
from ..standard.pixeldesc import PixelDescription
from ..standard.tags import tag_hex
from ..standard.transfer_syntax import is_native, syntax_for_media_type
from .concurrency import workers_for
from .deadline import active, current
from .metadata_cache import InstanceInfo, info_from_json
from .surface import DicomwebClient as Client

__all__ = [
    "FrameWriter",
    "InstanceInfo",
    "clear_cache",
    "fetch_frames",
    "fetch_stack",
    "fetch_volume",
    "fill_frames",
    "instance_info",
    "run_jobs",
    "series_info",
    "series_instances",
    "slice_order",
]

Job = TypeVar("Job")

log = logging.getLogger(__name__)

#: Frame numbers per request: keeps the URL short (servers cap request lines at 4-8 KiB).
FRAMES_PER_REQUEST = 256
#: Instances fetched at once by :func:`fetch_volume`.
DEFAULT_WORKERS = 4
_FRAMES_UNAVAILABLE = (400, 406, 415, 500, 501)


# ---- metadata, cached on the client (see dicomframes.client.metadata_cache) -----------------


def clear_cache(client: Client) -> None:
    """Forget the pixel metadata ``client`` has cached."""
    client.metadata_cache.forget()


def instance_info(client: Client, study: str, series: str, instance: str, *,
                  refresh: bool = False) -> InstanceInfo:
    """Pixel metadata of one instance: one ``.../metadata`` request, then cached."""
    cache = client.metadata_cache
    key = (study, series, instance)
    if not refresh:
        found = cache.get(key)
        if found is not None:
            return found
    objs = client.metadata_json(study, series, instance)
    if not objs:
        url = ResourcePath(study, series, instance).url(client.url) + "/metadata"
        raise errors.EmptyResponse("GET", url, "no metadata for this instance")
    info = info_from_json(objs[0], study, series)
    if info is None:
        raise ValueError(f"instance {instance} has no pixel data attributes (Rows, Columns): "
                         "it is not an image")
    if info.sop != instance:  # a server answering with another instance: trust the URL
        info = replace(info, sop=instance)
    cache.put(info)
    return info


def _instance_count(client: Client, study: str, series: str) -> int | None:
    """The series' NumberOfSeriesRelatedInstances from one QIDO-RS search (None: not given)."""
    try:
        found = client.search_json(
            "series", ResourcePath(study).search("series"), SeriesInstanceUID=series,
            includefield=["NumberOfSeriesRelatedInstances"], limit=1)
    except errors.DICOMwebError:  # a server that cannot answer this: read the metadata again
        return None
    if not found:
        return 0
    count = first_value(found[0], tag_hex(NUMBER_OF_SERIES_INSTANCES))
    return int(count) if isinstance(count, int | float) else None


def series_info(client: Client, study: str, series: str, *, refresh: bool = False,
                check: bool = True) -> tuple[InstanceInfo, ...]:
    """Pixel metadata of every image instance of a series: one ``.../metadata`` request,
    then cached. A cached series is checked first (``check``, see the module docstring);
    ``refresh=True`` reads it again in any case."""
    cache = client.metadata_cache
    if not refresh:
        kept = cache.get_series(study, series)
        if kept is not None and (not check or _instance_count(client, study, series) == kept[1]):
            return kept[0]
    infos = []
    objs = client.metadata_json(study, series)
    for obj in objs:
        info = info_from_json(obj, study, series)
        if info is not None:
            cache.put(info)
            infos.append(info)
    result = tuple(infos)
    cache.put_series(study, series, result, len(objs))
    return result


def series_instances(client: Client, study: str, series: str,
                     instances: Sequence[str] | None = None, *,
                     refresh: bool = False) -> list[InstanceInfo]:
    """The image instances of a series (all, or ``instances`` of it in that order); raises
    :class:`~dicomframes.errors.EmptyResponse` naming the URL when there are none or one
    asked for is not there."""
    series_url = ResourcePath(study, series).url(client.url)
    infos = list(series_info(client, study, series, refresh=refresh))
    if instances is not None:
        wanted = list(dict.fromkeys(str(s) for s in instances))
        by_sop = {i.sop: i for i in infos}
        if any(s not in by_sop for s in wanted):
            infos = list(series_info(client, study, series, refresh=True))
            by_sop = {i.sop: i for i in infos}
        missing = [s for s in wanted if s not in by_sop]
        if missing:
            raise errors.EmptyResponse("GET", series_url + "/metadata",
                                       f"no image instance {missing[0]} in this series")
        infos = [by_sop[s] for s in wanted]
    if not infos:
        raise errors.EmptyResponse("GET", series_url + "/metadata",
                                   "the series has no image instances")
    return infos


# ---- ordering ------------------------------------------------------------------------------


def slice_order(infos: Sequence[InstanceInfo]) -> list[InstanceInfo]:
    """Instances in slice order: by position along the slice normal (ImagePositionPatient .
    (row x column direction cosines)) when every instance has both, else by InstanceNumber
    (missing last), then SOPInstanceUID so that the order is always the same."""
    have_geometry = infos and all(i.position and i.orientation for i in infos)
    if have_geometry:
        orientation = np.asarray(infos[0].orientation, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        if np.linalg.norm(normal) > 1e-6:

            def along_normal(info: InstanceInfo) -> tuple:
                distance = float(np.dot(normal, np.asarray(info.position, dtype=float)))
                number = info.instance_number if info.instance_number is not None else 0
                return (distance, number, info.sop)

            return sorted(infos, key=along_normal)

    def by_number(info: InstanceInfo) -> tuple:
        number = info.instance_number
        return (number is None, number if number is not None else 0, info.sop)

    return sorted(infos, key=by_number)


# ---- fetching ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameWriter:
    """A destination for decoded frames other than the slots of one array: frame ``k`` of a
    request is decoded into ``buffer`` (one frame, reused, so it is still in the CPU cache)
    and handed to ``write(k, buffer)``, which puts it where it belongs (rescaled, say)."""

    buffer: np.ndarray
    write: Callable[[int, np.ndarray], None]

    def shifted(self, start: int) -> FrameWriter:
        """The same writer for a request whose frame 0 is frame ``start`` of this one."""
        if start == 0:
            return self
        return FrameWriter(self.buffer, lambda k, frame: self.write(start + k, frame))


#: Where :func:`fill_frames` puts frame k: slot k of an array, or a :class:`FrameWriter`.
Target = np.ndarray | FrameWriter


def _slot(out: Target, k: int) -> np.ndarray:
    return out[k] if isinstance(out, np.ndarray) else out.buffer


def _done(out: Target, k: int) -> None:
    if isinstance(out, FrameWriter):
        out.write(k, out.buffer)


def _part(out: Target, start: int, count: int) -> Target:
    if isinstance(out, np.ndarray):
        return out[start:start + count]
    return out.shifted(start)


def _note(client: Client, what: str) -> None:
    notes = client.capabilities.setdefault("frames_fallbacks", [])
    if what not in notes:
        notes.append(what)


def _syntax_of_part(part: Any, part_ts: str | None, asked: str | None) -> str:
    if part_ts:
        return part_ts
    if asked and asked != "*":
        return asked
    return syntax_for_media_type(getattr(part, "content_type", None) or OCTET_STREAM)


def _desc_for(info: InstanceInfo, syntax: str, transcoded: bool) -> PixelDescription:
    """A server that decodes YCbCr JPEG for us (DCMTK in Orthanc, pydicom in the embedded
    server) sends RGB while the metadata still says YBR_FULL(_422)."""
    desc = info.desc
    stored_compressed = info.stored_syntax is not None and not is_native(info.stored_syntax)
    if (is_native(syntax) and (transcoded or stored_compressed)
            and desc.photometric_interpretation in ("YBR_FULL", "YBR_FULL_422")):
        return desc.with_changes(photometric_interpretation="RGB")
    return desc


def _stream_into(client: Client, info: InstanceInfo, numbers: Sequence[int], out: Target,
                 asked: str | None, convert_color: bool, transcoded: bool) -> None:
    path = str(ResourcePath(info.study, info.series, info.sop, tuple(numbers)))
    count = 0
    for part, part_ts in client.iter_multipart(path, OCTET_STREAM, asked):
        if count >= len(numbers):
            raise errors.MultipartError(f"GET {path}: the server sent more than the "
                                        f"{len(numbers)} frames asked for")
        syntax = _syntax_of_part(part, part_ts, asked)
        desc = _desc_for(info, syntax, transcoded)
        decode_frame(part.content, syntax, desc, _slot(out, count), convert_color=convert_color)
        _done(out, count)
        count += 1
    if count != len(numbers):
        raise errors.MultipartError(f"GET {path}: asked for {len(numbers)} frames, the server "
                                    f"sent {count}")


def _from_instance(client: Client, info: InstanceInfo, numbers: Sequence[int], out: Target,
                   convert_color: bool) -> None:
    """Last resort: retrieve the whole instance and decode its pixel data here."""
    from pydicom.pixels import get_decoder

    datasets = client.retrieve(info.study, info.series, info.sop, transfer_syntax="*")
    if not datasets:
        url = ResourcePath(info.study, info.series, info.sop).url(client.url)
        raise errors.EmptyResponse("GET", url, "the instance retrieve returned nothing")
    ds = datasets[0]
    syntax = str(ds.file_meta.TransferSyntaxUID)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise missing_decoder(syntax) from exc
    indices = [n - 1 for n in numbers]
    unique = sorted(set(indices))
    position = {index: i for i, index in enumerate(unique)}
    frames = decoder.iter_array(ds, indices=unique, as_rgb=convert_color)
    decoded = [np.asarray(arr) for arr, _ in frames]
    for slot, index in enumerate(indices):
        target = _slot(out, slot)
        np.copyto(target, decoded[position[index]].reshape(target.shape), casting="same_kind")
        _done(out, slot)


def _fill(client: Client, info: InstanceInfo, numbers: Sequence[int], out: Target,
          transfer_syntax: str | None, convert_color: bool) -> None:
    """Fetch frames ``numbers`` of one instance into ``out`` (len(numbers) slots), with the
    fallbacks described in the module docstring."""
    asked = transfer_syntax or "*"
    try:
        _stream_into(client, info, numbers, out, asked, convert_color,
                     transcoded=asked != "*")
        return
    except errors.DecoderMissing as exc:
        if asked != "*":
            raise
        _note(client, "no local decoder: asked the server to decode")
        warnings.warn(f"{exc}; asking the server to send the frames decoded instead",
                      RuntimeWarning, stacklevel=4)
        _stream_into(client, info, numbers, out, None, convert_color, transcoded=True)
        return
    except errors.DICOMwebError as exc:
        if exc.status not in _FRAMES_UNAVAILABLE:
            raise
        refused = exc
    # The server cannot send these frames as stored (Orthanc: big endian, some RLE, native
    # YBR_FULL_422). Its stored file, decoded here by pydicom, is the faithful answer.
    _note(client, f"frames answered {refused.status}: decoded the retrieved instance")
    log.info("frames of %s: server answered %s (%s); retrieving the instance instead",
             info.sop, refused.status, refused.message or "no message")
    try:
        _from_instance(client, info, numbers, out, convert_color)
    except (errors.DICOMwebError, errors.DecoderMissing):
        if asked != "*":
            raise
        _note(client, "instance fallback failed: asked for the default syntax")
        _stream_into(client, info, numbers, out, None, convert_color, transcoded=True)


def fill_frames(client: Client, info: InstanceInfo, numbers: Sequence[int], out: Target,
                transfer_syntax: str | None, convert_color: bool) -> None:
    """Frames ``numbers`` of one instance into ``out``: slot k of an array, or handed one by
    one to a :class:`FrameWriter`, in requests of at most FRAMES_PER_REQUEST frames."""
    for start in range(0, len(numbers), FRAMES_PER_REQUEST):
        batch = numbers[start:start + FRAMES_PER_REQUEST]
        _fill(client, info, batch, _part(out, start, len(batch)), transfer_syntax,
              convert_color)


def _frame_numbers(frames: int | Sequence[int] | None, available: int) -> list[int]:
    if frames is None:
        return list(range(1, available + 1))
    numbers = [int(frames)] if isinstance(frames, int | np.integer) else [int(f) for f in frames]
    if not numbers:
        raise ValueError("no frame numbers given")
    bad = [n for n in numbers if n < 1 or n > available]
    if bad:
        raise ValueError(f"frame numbers run from 1 to {available} (NumberOfFrames); got "
                         f"{bad[:5]}")
    return numbers


def fetch_frames(
    client: Client,
    study: str,
    series: str,
    instance: str,
    frames: int | Sequence[int] | None = None,
    *,
    transfer_syntax: str | None = "*",
    convert_color: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Frames of one instance as an array (see :meth:`Client.frames`).

    ``frames``: None -> every frame, shape ``(n, rows, columns[, samples])``; an int (1-based)
    -> that frame without the first axis; a sequence -> those frames in that order (repeats
    allowed; each is fetched once). ``transfer_syntax``: ``"*"`` (default; the stored syntax,
    decoded here) or a UID the server should transcode to. ``out``: a preallocated array of
    the result's shape and dtype to fill.
    """
    info = instance_info(client, study, series, instance)
    numbers = _frame_numbers(frames, info.number_of_frames)
    single = isinstance(frames, int | np.integer)
    unique = list(dict.fromkeys(numbers))
    shape = info.desc.frame_shape if single else info.desc.output_shape(len(numbers))
    if out is not None and (out.shape != shape or out.dtype != info.desc.dtype):
        raise ValueError(f"out must have shape {shape} and dtype {info.desc.dtype}, got "
                         f"{out.shape} {out.dtype}")
    if len(unique) == len(numbers):
        target = info.desc.new_array(len(numbers)) if out is None else out.reshape(
            info.desc.output_shape(len(numbers)))
        fill_frames(client, info, numbers, target, transfer_syntax, convert_color)
        result = target if out is None else out
    else:
        fetched = info.desc.new_array(len(unique))
        fill_frames(client, info, unique, fetched, transfer_syntax, convert_color)
        where = {n: i for i, n in enumerate(unique)}
        picked = fetched[[where[n] for n in numbers]]
        if out is not None:
            out.reshape(picked.shape)[...] = picked
            picked = out
        result = picked
    if single and result is not out:
        return result.reshape(shape)
    return result


def _stack(client: Client, infos: Sequence[InstanceInfo], frame: int | None,
           transfer_syntax: str | None, convert_color: bool, workers: int | None) -> np.ndarray:
    """Frames of ``infos`` (all frames of each, or frame number ``frame`` of each) stacked in
    the given order, instances fetched ``workers`` at a time into one preallocated array."""
    kinds = {(i.desc.frame_shape, i.desc.dtype) for i in infos}
    if len(kinds) > 1:
        listed = ", ".join(f"{s} {d}" for s, d in sorted(kinds, key=str))
        raise ValueError(f"the instances differ in frame shape or dtype ({listed}); fetch them "
                         "one by one with client.frames")
    jobs: list[tuple[InstanceInfo, list[int]]] = []
    for info in infos:
        if frame is None:
            jobs.append((info, list(range(1, info.number_of_frames + 1))))
        else:
            jobs.append((info, _frame_numbers(int(frame), info.number_of_frames)))
    out = infos[0].desc.new_array(sum(len(numbers) for _, numbers in jobs))
    slots = []
    offset = 0
    for info, numbers in jobs:
        slots.append((info, numbers, out[offset:offset + len(numbers)]))
        offset += len(numbers)

    def run(slot: tuple[InstanceInfo, list[int], np.ndarray]) -> None:
        info, numbers, target = slot
        fill_frames(client, info, numbers, target, transfer_syntax, convert_color)

    run_jobs(slots, run, workers or workers_for(client, DEFAULT_WORKERS, 16))
    return out


def run_jobs(jobs: Sequence[Job], run: Callable[[Job], None], workers: int | None) -> None:
    """``run(job)`` for each job, ``workers`` (default DEFAULT_WORKERS) at a time in threads
    that keep the caller's deadline; the first failure cancels the rest and is raised."""
    deadline = current()  # the caller's deadline holds in the worker threads too

    def one(job: Job) -> None:
        with contextlib.nullcontext() if deadline is None else active(None, deadline):
            run(job)

    workers = max(1, min(workers or DEFAULT_WORKERS, len(jobs)))
    if workers == 1:
        for job in jobs:
            one(job)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dicomframes") as pool:
        futures = [pool.submit(one, job) for job in jobs]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def fetch_volume(
    client: Client,
    study: str,
    series: str,
    *,
    transfer_syntax: str | None = "*",
    convert_color: bool = False,
    workers: int | None = None,
    refresh: bool = False,
    instances: Sequence[str] | None = None,
) -> np.ndarray:
    """Every frame of a series (or of ``instances`` of it) stacked in slice order, shape
    ``(frames, rows, columns[, samples])`` (see :meth:`Client.volume`).

    Values are the stored ones (no rescale; :meth:`Client.image` gives modality values with
    their geometry). The series metadata is read once (cached on the client, checked before
    it is trusted); instances are fetched ``workers`` at a time (default: 4 on a local link,
    more across a network to hide the measured round trip, at most 16), each streaming into
    its own slice of one preallocated array. Instances must share frame shape and dtype;
    instances without pixels are left out.
    """
    infos = series_instances(client, study, series, instances, refresh=refresh)
    return _stack(client, slice_order(infos), None, transfer_syntax, convert_color, workers)


def fetch_stack(
    client: Client,
    uids: Sequence[tuple[str, str, str]],
    *,
    frame: int | None = None,
    order: str = "slice",
    transfer_syntax: str | None = "*",
    convert_color: bool = False,
    workers: int | None = None,
) -> np.ndarray:
    """Frames of several instances, each given as (study, series, sop), stacked in one array
    (for ``df.dicom.frames()`` on the rows of an instance table).

    ``frame`` None takes every frame of each instance, a number takes that frame of each.
    ``order="slice"`` sorts the instances as :func:`slice_order` does, ``"given"`` keeps the
    order of ``uids``. Metadata comes from one series request per series with several of the
    instances (cached), else per instance; instances are fetched ``workers`` at a time.
    """
    if order not in ("slice", "given"):
        raise ValueError(f"order is 'slice' or 'given', got {order!r}")
    triples = [(str(a), str(b), str(c)) for a, b, c in uids]
    if not triples:
        raise ValueError("no instances given")
    counts: dict[tuple[str, str], int] = {}
    for study, series, _ in triples:
        counts[(study, series)] = counts.get((study, series), 0) + 1
    infos = []
    for study, series, sop in triples:
        info = None
        if counts[(study, series)] > 1:
            info = next((i for i in series_info(client, study, series) if i.sop == sop), None)
        if info is None:
            info = instance_info(client, study, series, sop)
        infos.append(info)
    if order == "slice":
        infos = slice_order(infos)
    return _stack(client, infos, frame, transfer_syntax, convert_color, workers)
