"""Person names (PS3.5 6.2 PN, PS3.18 F.2.2): JSON groups, readable text and back. No I/O."""

from __future__ import annotations

from typing import Any

from pydicom.valuerep import PersonName

__all__ = [
    "join_person_name",
    "parse_person_name",
    "person_name_parts",
    "pn_words",
    "readable_group",
    "shown_group",
]

PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def pn_groups(value: Any) -> dict[str, str]:
    """PN JSON value (object or "a=b=c" string) -> {"Alphabetic": ..., ...}.

    Only the three groups with text values are kept: anything else in a PN object (numbers,
    nested objects, unknown keys) is not a name and is dropped.
    """
    if isinstance(value, dict):
        return {g: value[g] for g in PN_GROUPS if isinstance(value.get(g), str) and value[g]}
    if isinstance(value, PersonName):
        value = str(value)
    if not isinstance(value, str):
        return {}
    return {g: part for g, part in zip(PN_GROUPS, value.split("="), strict=False) if part}


def readable_group(group: str) -> str:
    """One "^"-separated name group in readable form ("Doe^John^A" -> "Doe, John A")."""
    if "^" not in group:
        return group
    parts = [p.strip() for p in group.split("^")]
    parts += [""] * (5 - len(parts))
    family, given, middle, prefix, suffix = parts[:5]
    first = " ".join(p for p in (given, middle) if p)
    text = ", ".join(p for p in (family, first) if p)
    if prefix:
        text = f"{prefix} {text}" if text else prefix
    if suffix:
        text = f"{text}, {suffix}" if text else suffix
    return text


def person_name(value: dict | str | None) -> str | None:
    """Return a person name in readable form, from a PN JSON value or a "^" string.

    The Alphabetic group is used (the Ideographic, then the Phonetic group when it is
    empty): family + ", " + given and middle names; a prefix is prepended with a space and a
    suffix appended with ", ". ``"Doe^John^A"`` -> ``"Doe, John A"``, ``"Doe"`` -> ``"Doe"``,
    ``"Doe^John^^Dr.^Jr."`` -> ``"Dr. Doe, John, Jr."``; a value without "^" stays as it is
    (``"Anony Mous"``). Returns None for an empty value.
    """
    group = shown_group(value)
    return None if group is None else readable_group(group)


def shown_group(value: Any) -> str | None:
    """The group of a PN value that is shown: the Alphabetic one, else the Ideographic, else
    the Phonetic; None when all are empty."""
    if value is None:
        return None
    groups = pn_groups(value)
    return next((groups[g] for g in PN_GROUPS if groups.get(g)), None)


def parse_person_name(readable: str) -> str:
    """Return the DICOM "^" form of a readable name made by :func:`person_name`.

    ``"Doe, John A"`` -> ``"Doe^John^A"``; ``"Doe, John, Jr."`` -> ``"Doe^John^^^Jr."``; a
    string without ", " (``"Anony Mous"``, ``"Doe*"``) or already holding "^" or "=" is
    returned unchanged. A prefix cannot be told from the family name and stays in it.
    """
    text = readable.strip()
    if "^" in text or "=" in text or ", " not in text:
        return text
    family, rest = text.split(", ", 1)
    suffix = ""
    if ", " in rest:
        rest, suffix = rest.split(", ", 1)
    words = rest.split()
    given = words[0] if words else ""
    middle = " ".join(words[1:])
    parts = [family.strip(), given, middle, "", suffix.strip()]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def person_name_parts(value: Any) -> dict[str, str] | None:
    """A PN value as a dict of family/given/middle/prefix/suffix (plus "ideographic" and
    "phonetic" groups when present); None when empty."""
    groups = pn_groups(value)
    if not groups:
        return None

    def split(group: str) -> dict[str, str]:
        parts = group.split("^") + [""] * 5
        return dict(zip(("family", "given", "middle", "prefix", "suffix"), parts[:5], strict=True))

    out = split(groups.get("Alphabetic", ""))
    for name in ("Ideographic", "Phonetic"):
        if groups.get(name):
            out[name.lower()] = split(groups[name])  # type: ignore[assignment]
    return out


def pn_words(name: str | None) -> str | None:
    """Lower-case words of a person name, space separated with a leading space (fuzzy search).

    ``"Doe^John"`` -> ``" doe john"``: the leading space lets a fuzzy match look for
    ``" jo"`` at the start of any word.
    """
    if not name:
        return None
    words = [w for w in name.replace("^", " ").replace("=", " ").casefold().split() if w]
    return " " + " ".join(words) if words else None


def join_person_name(value: dict) -> str:
    """A PN value given as groups (``{"Alphabetic": "Doe^John"}``) or as the components of
    :func:`person_name_parts` -> its DICOM form ``"Doe^John=...=..."``."""
    if any(g in value for g in PN_GROUPS):
        groups = [value.get(g, "") or "" for g in PN_GROUPS]
    else:
        groups = [_join_components(value)]
        groups += [_join_components(value[g]) for g in ("ideographic", "phonetic") if g in value]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _join_components(parts: dict[str, str]) -> str:
    names = [parts.get(k, "") or "" for k in ("family", "given", "middle", "prefix", "suffix")]
    while names and not names[-1]:
        names.pop()
    return "^".join(names)
