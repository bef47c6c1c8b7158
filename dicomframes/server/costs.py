"""What serving a stored instance costs in memory, estimated from what the file holds, and
whether its declared sizes can be trusted at all (an archive may hold files imported from
anywhere, or indexed by an older version: the read path checks them on its own).

The estimates are what :class:`.budget.MemoryBudget` reserves before a request decodes,
renders or transcodes: never an allocation sized by a declared count, since a declared count
that the pixel data does not hold is refused (422) before anything is estimated.
"""

from __future__ import annotations

import json
from typing import Any

from ..standard.pixeldesc import PixelDescription
from ..standard.pixellayout import declared_size_problem
from .storage import InstanceRecord
from .web import SPOOL_MEMORY, HTTPProblem

#: Copies of a frame that decoding makes (the decoder's output, a contiguous copy, bytes).
DECODE_COPIES = 3
#: Bytes per sample that rendering holds at once (float64 values, windowed copy, 8-bit image).
RENDER_BYTES_PER_SAMPLE = 24
#: Copies of a whole file that pydicom holds when it has to read all of it.
PARSE_COPIES = 2


def _metadata(record: InstanceRecord) -> dict[str, Any]:
    try:
        value = json.loads(record.metadata)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def pixel_problem(record: InstanceRecord) -> HTTPProblem | None:
    """A 422 when the instance declares sizes its pixel data does not hold (frames, rows,
    columns, bit depth), else None."""
    problem = declared_size_problem(record.pixels, _metadata(record), record.size)
    if problem is None:
        return None
    return HTTPProblem(422, f"instance {record.sop_instance} cannot be served: {problem}")


def _frame_bytes(record: InstanceRecord) -> int:
    """Bytes of one decoded frame (0 when the description is unusable)."""
    try:
        return PixelDescription.from_json(_metadata(record)).frame_nbytes
    except ValueError:
        return 0


def _parse_cost(record: InstanceRecord) -> int:
    """What reading the whole file with pydicom holds (data that cannot be sliced)."""
    layout = record.pixels
    sliced = layout.kind in ("native", "encapsulated")
    return 0 if sliced else PARSE_COPIES * record.size


def decode_cost(record: InstanceRecord, frames: int = 1) -> int:
    """Memory to decode ``frames`` frames kept until the answer starts (up to the spool's
    memory; past it they go to a file) plus the decoder's own copies of one frame."""
    one = _frame_bytes(record)
    return min(frames * one, SPOOL_MEMORY) + DECODE_COPIES * one + _parse_cost(record)


def render_cost(record: InstanceRecord) -> int:
    """Memory to render one frame of the instance to an image."""
    try:
        samples = PixelDescription.from_json(_metadata(record)).frame_pixels
    except ValueError:
        samples = 0
    return samples * RENDER_BYTES_PER_SAMPLE + decode_cost(record)


def transcode_cost(record: InstanceRecord) -> int:
    """Memory to rewrite the whole instance in Explicit VR Little Endian (decoded)."""
    frames = max(record.pixels.frames, 1)
    return PARSE_COPIES * (record.size + frames * _frame_bytes(record))
