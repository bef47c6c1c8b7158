"""QIDO-RS attributes per level (PS3.18 10.6, Tables 10.6.1-5 and 10.6.3-3 to -5).

Which attributes a search matches on, which a search returns by default at each level, which
are computed by the server, and which level an attribute belongs to. The server's index and
query matching and the client's DataFrames (columns of an empty result, filters built from a
row) all read these tables. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .tags import tag_of

__all__ = [
    "COMMON_TAGS",
    "COMPUTED",
    "DEFAULT_TAGS",
    "INSTANCE_AVAILABILITY",
    "LEVELS",
    "MODALITIES_IN_STUDY",
    "NOT_FILTERS",
    "NUMBER_OF_SERIES_INSTANCES",
    "NUMBER_OF_STUDY_INSTANCES",
    "NUMBER_OF_STUDY_SERIES",
    "OPTIONAL_DEFAULTS",
    "PLURAL",
    "RESERVED_QIDO_KEYS",
    "RETRIEVE_URL",
    "SEARCHABLE",
    "SERIES_LEVEL_TAGS",
    "STUDY_LEVEL_TAGS",
    "UID_KEYWORDS",
    "Attribute",
    "level_name",
    "level_of_tag",
    "levels_above",
    "returned_tags",
    "within_level",
]

#: The hierarchy, top down: a patient's studies hold series, which hold instances.
LEVELS = ("study", "series", "instance")

#: The plural each level takes in a resource path (``/studies``, ``/series``, ``/instances``).
PLURAL = {"study": "studies", "series": "series", "instance": "instances"}

#: QIDO-RS query keys that are not attribute filters (PS3.18 8.3.4): lower case.
RESERVED_QIDO_KEYS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})

_LEVEL_NAMES = {**{level: level for level in LEVELS}, **{p: s for s, p in PLURAL.items()}}


def level_name(level: str) -> str:
    """A level in its singular form: "studies"/"study" -> "study", "series" -> "series",
    "instances"/"instance" -> "instance"; anything else is a ValueError naming the choices."""
    try:
        return _LEVEL_NAMES[str(level).lower()]
    except KeyError:
        raise ValueError(
            f"level must be 'studies', 'series' or 'instances', not {level!r}") from None


def levels_above(level: str) -> tuple[str, ...]:
    """The levels above ``level`` (either form), top down: "instance" -> study, series."""
    return LEVELS[: LEVELS.index(level_name(level))]


def within_level(attribute_level: str, level: str) -> bool:
    """Whether a search at ``level`` reaches attributes of ``attribute_level``: its own level
    or one above (a series search matches on study attributes, not on instance ones)."""
    return level_name(attribute_level) in (*levels_above(level), level_name(level))

#: The UID that names an object at each level.
UID_KEYWORDS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID",
                "instance": "SOPInstanceUID"}


@dataclass(frozen=True)
class Attribute:
    """A searchable attribute: its keyword, level and kind of matching (PS3.4 C.2.2.2)."""

    keyword: str
    level: str
    kind: str  # uid | str | cs | pn | da | tm | int

    @cached_property
    def tag(self) -> int:
        """The attribute's tag."""
        return tag_of(self.keyword)

    @cached_property
    def key(self) -> str:
        """The attribute's key in DICOM JSON (8 hex digits)."""
        return f"{self.tag:08X}"


_SEARCHABLE = [
    Attribute("StudyInstanceUID", "study", "uid"),
    Attribute("PatientName", "study", "pn"),
    Attribute("PatientID", "study", "str"),
    Attribute("PatientBirthDate", "study", "da"),
    Attribute("PatientSex", "study", "cs"),
    Attribute("StudyDate", "study", "da"),
    Attribute("StudyTime", "study", "tm"),
    Attribute("AccessionNumber", "study", "str"),
    Attribute("ReferringPhysicianName", "study", "pn"),
    Attribute("StudyID", "study", "str"),
    Attribute("StudyDescription", "study", "str"),
    Attribute("IssuerOfPatientID", "study", "str"),
    Attribute("SeriesInstanceUID", "series", "uid"),
    Attribute("Modality", "series", "cs"),
    Attribute("SeriesNumber", "series", "int"),
    Attribute("SeriesDescription", "series", "str"),
    Attribute("SeriesDate", "series", "da"),
    Attribute("SeriesTime", "series", "tm"),
    Attribute("PerformedProcedureStepStartDate", "series", "da"),
    Attribute("PerformedProcedureStepStartTime", "series", "tm"),
    Attribute("BodyPartExamined", "series", "cs"),
    Attribute("Manufacturer", "series", "str"),
    Attribute("SOPInstanceUID", "instance", "uid"),
    Attribute("SOPClassUID", "instance", "uid"),
    Attribute("InstanceNumber", "instance", "int"),
    Attribute("ContentDate", "instance", "da"),
    Attribute("ContentTime", "instance", "tm"),
    Attribute("NumberOfFrames", "instance", "int"),
]
#: Attributes the embedded server matches on, by keyword, in index column order.
SEARCHABLE: dict[str, Attribute] = {a.keyword: a for a in _SEARCHABLE}

#: SpecificCharacterSet and TimezoneOffsetFromUTC belong to every level: returned once, from
#: the level searched.
COMMON_TAGS = (0x00080005, 0x00080201)

#: Attributes returned by default at each level (PS3.18 Table 10.6.3-3, -4, -5), computed
#: ones apart (see COMPUTED). Present even when the instance lacks them (with an empty value),
#: except those in OPTIONAL_DEFAULTS.
DEFAULT_TAGS: dict[str, tuple[int, ...]] = {
    "study": (0x00080020, 0x00080030, 0x00080050, 0x00080090, 0x00100010, 0x00100020,
              0x00100030, 0x00100040, 0x0020000D, 0x00200010),
    "series": (0x00080060, 0x0008103E, 0x0020000E, 0x00200011, 0x00400244, 0x00400245,
               0x00400275),
    "instance": (0x00080016, 0x00080018, 0x00200013, 0x00280010, 0x00280011, 0x00280100,
                 0x00280008),
}
OPTIONAL_DEFAULTS = frozenset({0x00080005, 0x00080201, 0x00400244, 0x00400245, 0x00400275,
                               0x00280008, 0x00280010, 0x00280011, 0x00280100, 0x0008103E})

# Computed attributes (PS3.4 C.3.4, PS3.18 Table 10.6.3-3)
MODALITIES_IN_STUDY = 0x00080061
NUMBER_OF_STUDY_SERIES = 0x00201206
NUMBER_OF_STUDY_INSTANCES = 0x00201208
NUMBER_OF_SERIES_INSTANCES = 0x00201209
INSTANCE_AVAILABILITY = 0x00080056
RETRIEVE_URL = 0x00081190
#: Computed attribute -> the level whose searches return it.
COMPUTED = {MODALITIES_IN_STUDY: "study", NUMBER_OF_STUDY_SERIES: "study",
            NUMBER_OF_STUDY_INSTANCES: "study", NUMBER_OF_SERIES_INSTANCES: "series",
            INSTANCE_AVAILABILITY: "instance", RETRIEVE_URL: "instance"}

#: Return-only attributes that QIDO servers refuse as matching keys.
NOT_FILTERS = frozenset({
    "RetrieveURL", "InstanceAvailability", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances",
    "NumberOfPatientRelatedStudies", "TimezoneOffsetFromUTC", "SpecificCharacterSet",
})

#: Attributes of the study (with every Patient-group 0010 attribute) and of the series: what
#: ``includefield=all`` returns at those levels.
STUDY_LEVEL_TAGS = frozenset({
    0x00080005, 0x00080020, 0x00080030, 0x00080050, 0x00080051, 0x00080090, 0x00080096,
    0x00080201, 0x00081030, 0x00081032, 0x00081048, 0x00081049, 0x00081060, 0x00081062,
    0x00081080, 0x00081110, 0x0020000D, 0x00200010, 0x00321032, 0x00321033, 0x00321060,
    0x00321064, 0x00380010, 0x00380300, 0x00400275,
})
SERIES_LEVEL_TAGS = frozenset({
    0x00080005, 0x00080021, 0x00080031, 0x00080060, 0x00080064, 0x00080070, 0x00080080,
    0x00080081, 0x00081010, 0x0008103E, 0x00081040, 0x00081050, 0x00081070, 0x00081090,
    0x00081111, 0x00180015, 0x00181000, 0x00181020, 0x00181030, 0x00185100, 0x0020000E,
    0x00200011, 0x00200052, 0x00200060, 0x00201040, 0x00400244, 0x00400245, 0x00400253,
    0x00400254, 0x00400260, 0x00400275, 0x00080201,
})

_PARENT_UIDS = {"study": (), "series": (0x0020000D,), "instance": (0x0020000D, 0x0020000E)}


def level_of_tag(tag: int) -> str:
    """The level an attribute belongs to: "study", "series" or "instance"."""
    if tag >> 16 == 0x0010 or tag in STUDY_LEVEL_TAGS:
        return "study"
    if tag in SERIES_LEVEL_TAGS:
        return "series"
    return "instance"


def returned_tags(level: str) -> tuple[int, ...]:
    """Every attribute a search at ``level`` returns without ``includefield``: the defaults,
    the common and computed ones, and the UIDs of the levels above (in tag order)."""
    if level not in DEFAULT_TAGS:
        raise ValueError(f"unknown level {level!r}: study, series or instance")
    # SpecificCharacterSet is left out: a client has already decoded the text it names
    tags = set(DEFAULT_TAGS[level]) | {0x00080201} | set(_PARENT_UIDS[level])
    tags.update(tag for tag, at in COMPUTED.items() if at == level)
    tags.add(RETRIEVE_URL)
    if level == "study":
        tags.add(INSTANCE_AVAILABILITY)
    return tuple(sorted(tags))
