"""Sample DICOM files that dicomframes can write on any machine, without downloading anything.

- :func:`write_tutorial_files`: the three files of the "DICOMweb with cURL" tutorial (green
  square, red triangle, blue circle) with the same UIDs and header as the originals, so that
  every notebook and test can use the tutorial's UIDs.
- :func:`write_multiframe_study`: one multi-frame 16-bit instance whose frames are easy to
  recognise (:func:`multiframe_pixels` gives the expected array).
- :func:`write_archive`: a small multi-patient archive (CT volumes, MR series, chest X-rays,
  secondary captures, some multi-frame) spread over several years, for exploring with queries.

Everything is deterministic: the same arguments give the same UIDs, headers and pixels. Files
are DICOM Part-10 (preamble, file meta) in Explicit VR Little Endian.
"""

from .archive import write_archive
from .tutorial import (
    TUTORIAL,
    TutorialUIDs,
    ct_slice,
    multiframe_pixels,
    tutorial_pixels,
    write_multiframe_study,
    write_tutorial_files,
)

__all__ = [
    "TUTORIAL",
    "TutorialUIDs",
    "ct_slice",
    "multiframe_pixels",
    "tutorial_pixels",
    "write_archive",
    "write_multiframe_study",
    "write_tutorial_files",
]
