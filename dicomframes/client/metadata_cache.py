"""What decoding and placing an instance's frames needs, read from its metadata and cached on
the client that read it.

Every :class:`~dicomframes.client.Client` holds one :class:`MetadataCache`
(``client.metadata_cache``). It cannot go stale through this client: ``client.store`` and
``client.delete`` forget what they may have changed. Another client (or another program) may
change a series too, so a cached series is trusted only after a cheap check: one QIDO-RS
series search for its NumberOfSeriesRelatedInstances, compared with the count the cached
metadata had (a series whose count the server does not give is read again). An instance's
metadata is kept as read: a SOP Instance UID names one unchanging instance. The reads and
checks are :func:`dicomframes.client.frames.series_info` and ``instance_info``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..standard.dicomjson import first_value
from ..standard.frame_groups import FrameAttributes, ModalityLUT, frame_attributes, modality_lut_of
from ..standard.pixeldesc import PixelDescription

__all__ = ["InstanceInfo", "MetadataCache", "info_from_json"]

_CACHE_ENTRIES = 8192
_SERIES_ENTRIES = _CACHE_ENTRIES // 16


@dataclass(frozen=True)
class InstanceInfo:
    """What fetching, ordering and rescaling an instance's frames needs, read once from its
    metadata. ``frames``: each frame's position, orientation, spacing and rescale
    (:func:`~dicomframes.standard.frame_groups.frame_attributes`); ``lut_problem``: why the
    Modality LUT could not be read, when it could not."""

    study: str
    series: str
    sop: str
    desc: PixelDescription
    stored_syntax: str | None = None
    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    instance_number: int | None = None
    frames: tuple[FrameAttributes, ...] = ()
    modality: str | None = None
    pet_units: str | None = None
    modality_lut: ModalityLUT | None = None
    lut_problem: str | None = None

    @property
    def number_of_frames(self) -> int:
        """NumberOfFrames (1 when absent)."""
        return self.desc.number_of_frames


def _text(obj: Mapping[str, Any], tag: str) -> str | None:
    value = first_value(obj, tag)
    return str(value).strip() or None if value is not None else None


def info_from_json(obj: Mapping[str, Any], study: str | None = None,
                   series: str | None = None) -> InstanceInfo | None:
    """An :class:`InstanceInfo` from one DICOM JSON metadata object; None for an instance
    without pixels (no Rows/Columns, e.g. a structured report)."""
    try:
        desc = PixelDescription.from_json(obj)
    except ValueError:
        return None
    sop = first_value(obj, "00080018")
    study = first_value(obj, "0020000D") or study
    series = first_value(obj, "0020000E") or series
    if not sop or not study or not series:
        return None
    number = first_value(obj, "00200013")
    stored = first_value(obj, "00020010")
    frames = frame_attributes(obj, desc.number_of_frames)
    lut, problem = None, None
    try:
        lut = modality_lut_of(obj)
    except ValueError as exc:
        problem = str(exc)
    return InstanceInfo(
        study=str(study),
        series=str(series),
        sop=str(sop),
        desc=desc,
        stored_syntax=str(stored) if stored else None,
        position=frames[0].position,
        orientation=frames[0].orientation,
        instance_number=int(number) if isinstance(number, int | float) else None,
        frames=frames,
        modality=_text(obj, "00080060"),
        pet_units=_text(obj, "00541001"),
        modality_lut=lut,
        lut_problem=problem,
    )


class MetadataCache:
    """A client's cached pixel metadata: instances, and series with their instance count."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.instances: OrderedDict[tuple[str, str, str], InstanceInfo] = OrderedDict()
        self.series: OrderedDict[tuple[str, str], tuple[tuple[InstanceInfo, ...], int]] = (
            OrderedDict())

    def put(self, info: InstanceInfo) -> None:
        """Keep one instance's metadata."""
        key = (info.study, info.series, info.sop)
        with self.lock:
            self.instances[key] = info
            self.instances.move_to_end(key)
            while len(self.instances) > _CACHE_ENTRIES:
                self.instances.popitem(last=False)

    def get(self, key: tuple[str, str, str]) -> InstanceInfo | None:
        """An instance's metadata, if kept."""
        with self.lock:
            info = self.instances.get(key)
            if info is not None:
                self.instances.move_to_end(key)
            return info

    def put_series(self, study: str, series: str, infos: tuple[InstanceInfo, ...],
                   count: int) -> None:
        """Keep a series' image instances and how many instances its metadata had."""
        with self.lock:
            self.series[(study, series)] = (infos, count)
            self.series.move_to_end((study, series))
            while len(self.series) > _SERIES_ENTRIES:
                self.series.popitem(last=False)

    def get_series(self, study: str, series: str) -> tuple[tuple[InstanceInfo, ...], int] | None:
        """A series' kept image instances and instance count, if kept."""
        with self.lock:
            return self.series.get((study, series))

    def forget(self, study: str | None = None, series: str | None = None,
               instance: str | None = None) -> None:
        """Forget everything (no arguments) or what lies under a study, series or instance."""
        with self.lock:
            if study is None:
                self.instances.clear()
                self.series.clear()
                return
            for key in [k for k in self.instances if k[0] == study
                        and (series is None or k[1] == series)
                        and (instance is None or k[2] == instance)]:
                del self.instances[key]
            for skey in [k for k in self.series if k[0] == study
                         and (series is None or k[1] == series)]:
                del self.series[skey]
