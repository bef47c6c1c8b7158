"""DICOMweb resource paths (PS3.18 10.4): studies, series, instances and frames.

One type builds and parses every study/series/instance/frames path, so that the client, the
server and the DataFrame helpers agree on them. UIDs are validated on the way in: a path never
carries anything but digits and dots where a UID goes. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .uids import validate_uid

__all__ = ["ResourcePath", "parse_frame_list"]

_PATH_RE = re.compile(
    r"(?:^|/)studies/([^/?#]+)(?:/series/([^/?#]+)(?:/instances/([^/?#]+)"
    r"(?:/frames/([^/?#]+))?)?)?/?(?:[?#].*)?$"
)


def frame_list(frames: Iterable[int]) -> str:
    """Frame numbers as the comma list of a frames path (``[1, 2, 3]`` -> ``"1,2,3"``).

    Frame numbers start at 1 (PS3.18 10.4.1.1.4); anything else raises ValueError.
    """
    numbers = [int(n) for n in frames]
    if not numbers:
        raise ValueError("a frame list needs at least one frame number")
    bad = [n for n in numbers if n < 1]
    if bad:
        raise ValueError(f"frame numbers start at 1; {bad[0]} is not valid")
    return ",".join(str(n) for n in numbers)


def parse_frame_list(text: str) -> list[int]:
    """The frame numbers of a frames path segment (``"1,3"`` -> ``[1, 3]``).

    Raises ValueError naming the item that is not a frame number (ASCII digits only: a
    Unicode digit such as "²" is refused, as is 0 and anything past 2**31).
    """
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()) or len(item) > 10:
            raise ValueError(f"frame list {text!r}: {item!r} is not a frame number "
                             "(frames are numbered from 1, e.g. 1,3)")
        number = int(item)
        if number < 1:
            raise ValueError(f"frame numbers start at 1; {number} is not valid")
        if number >= 2**31:
            raise ValueError(f"frame number {number} is too large (at most 2**31 - 1)")
        numbers.append(number)
    return numbers


@dataclass(frozen=True)
class ResourcePath:
    """A study, series, instance or frames resource, relative to the service root.

    ``str(ResourcePath("1.2", "1.2.3"))`` is ``"studies/1.2/series/1.2.3"``; the empty path is
    the service root itself (``ResourcePath()``). A series needs its study, an instance its
    series, frames their instance.
    """

    study: str | None = None
    series: str | None = None
    instance: str | None = None
    frames: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.study is None and (self.series or self.instance):
            raise ValueError("series and instance need the study they belong to")
        if self.series is None and self.instance is not None:
            raise ValueError("an instance needs its series")
        if self.instance is None and self.frames is not None:
            raise ValueError("frames need their instance")
        for value, what in ((self.study, "StudyInstanceUID"),
                            (self.series, "SeriesInstanceUID"),
                            (self.instance, "SOPInstanceUID")):
            if value is not None:
                validate_uid(value, what)
        if self.frames is not None:
            frame_list(self.frames)

    @property
    def level(self) -> str | None:
        """"study", "series", "instance", "frames" or None for the service root."""
        if self.frames is not None:
            return "frames"
        if self.instance is not None:
            return "instance"
        if self.series is not None:
            return "series"
        return "study" if self.study is not None else None

    def __str__(self) -> str:
        path = ""
        if self.study is not None:
            path = f"studies/{self.study}"
        if self.series is not None:
            path += f"/series/{self.series}"
        if self.instance is not None:
            path += f"/instances/{self.instance}"
        if self.frames is not None:
            path += f"/frames/{frame_list(self.frames)}"
        return path

    def child(self, resource: str) -> str:
        """This path followed by a sub-resource: ``child("metadata")`` ->
        ``"studies/1.2/metadata"``; at the service root just ``resource``."""
        text = str(self)
        return f"{text}/{resource}" if text else resource

    def search(self, level: str) -> str:
        """The QIDO-RS path that searches ``level`` ("study", "series" or "instance") inside
        this resource: ``ResourcePath("1.2").search("instance")`` -> ``"studies/1.2/instances"``."""
        name = {"study": "studies", "series": "series", "instance": "instances"}.get(level)
        if name is None:
            raise ValueError(f"unknown search level {level!r}: study, series or instance")
        return self.child(name) if level != "study" else "studies"

    def url(self, base: str) -> str:
        """The absolute URL of this resource under the service root ``base``."""
        text = str(self)
        return f"{base.rstrip('/')}/{text}" if text else base.rstrip("/")

    @classmethod
    def parse(cls, text: str) -> ResourcePath:
        """The resource named by a path or URL that ends in ``studies/...`` (a RetrieveURL,
        a Content-Location): ``"http://h/dicom-web/studies/1.2/series/3.4"`` gives
        ``ResourcePath("1.2", "3.4")``. Raises ValueError when there is no such path or a
        UID in it is malformed."""
        match = _PATH_RE.search(text or "")
        if not match:
            raise ValueError(f"not a DICOMweb study, series or instance path: {text!r}")
        frames = tuple(parse_frame_list(match[4])) if match[4] else None
        return cls(match[1], match[2], match[3], frames)
