"""Fuzzing the multipart/related decoder: random and mutated bodies raise MultipartError and
nothing else, chunking never changes the answer, and encode -> decode gives the parts back."""

from __future__ import annotations

import contextlib
import itertools

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dicomframes.errors import MultipartError
from dicomframes.standard.multipart import decode, encode, iter_parts, new_boundary

# bounded: a fixed number of cases, no shrinking (a failure shows the case as generated)
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow])
BOUNDARY = "fuzzBoundary42"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
                min_size=1, max_size=20)
header_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                       max_size=40).map(str.strip)
parts_strategy = st.lists(
    st.tuples(st.dictionaries(token, header_value, max_size=4), st.binary(max_size=300)),
    max_size=6)


def valid_body(parts: list[tuple[dict[str, str], bytes]], boundary: str = BOUNDARY) -> bytes:
    """A well-formed body made by ``encode``."""
    return b"".join(encode(parts, boundary))


def decode_or_error(body: bytes, content_type: str = CONTENT_TYPE) -> list[bytes] | None:
    """Contents of the decoded parts, or None after a MultipartError (anything else fails)."""
    try:
        return [bytes(p.content) for p in decode(body, content_type)]
    except MultipartError:
        return None


def chunked(body: bytes, cuts: list[int]) -> list[bytes]:
    """``body`` cut at the given offsets."""
    points = sorted({c % (len(body) + 1) for c in cuts})
    edges = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


def iter_or_error(chunks: list[bytes]) -> list[bytes] | None:
    """Like :func:`decode_or_error`, through the streaming decoder."""
    try:
        return [bytes(p.content) for p in iter_parts(iter(chunks), BOUNDARY)]
    except MultipartError:
        return None


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_give_parts_or_multipart_error(body: bytes) -> None:
    decode_or_error(body)
    iter_or_error([body])


@FUZZ
@given(st.binary(max_size=400).map(
    lambda b: b"--" + BOUNDARY.encode() + b"\r\n" + b + b"\r\n--" + BOUNDARY.encode() + b"--"))
def test_random_parts_between_boundaries(body: bytes) -> None:
    decode_or_error(body)


mutation = st.one_of(
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.integers(0, 400)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.sampled_from(
        [b"\r\n", b"\n", b"--", b"--" + BOUNDARY.encode(), b"\r\n--" + BOUNDARY.encode() + b"--",
         b":", b"\r\n\r\n", b"\x00", b"Content-Type: x\r\n", b"\xff\xfe"])),
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
)


def mutate(body: bytes, steps: list[tuple]) -> bytes:
    """Apply cuts, insertions, byte changes and truncations at positions modulo the length."""
    data = bytearray(body)
    for kind, where, what in steps:
        at = where % (len(data) + 1)
        if kind == "cut":
            del data[at : at + what]
        elif kind == "insert":
            data[at:at] = what
        elif kind == "flip" and data:
            data[at % len(data)] = what
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


@FUZZ
@given(parts_strategy, st.lists(mutation, min_size=1, max_size=4),
       st.lists(st.integers(0, 10_000), max_size=8))
def test_mutated_bodies_raise_only_multipart_error(parts, steps, cuts) -> None:
    body = mutate(valid_body(parts), steps)
    whole = decode_or_error(body)
    streamed = iter_or_error(chunked(body, cuts))
    # the streaming decoder, fed in any chunks, agrees with the in-memory one
    assert streamed == whole


@FUZZ
@given(parts_strategy, st.lists(st.integers(0, 10_000), max_size=8))
def test_encode_then_decode_gives_the_parts_back(parts, cuts) -> None:
    boundary = new_boundary()
    body = valid_body(parts, boundary)
    content_type = f"multipart/related; boundary={boundary}"
    decoded = decode(body, content_type)
    assert [bytes(p.content) for p in decoded] == [content for _, content in parts]
    for part, (headers, _) in zip(decoded, parts, strict=True):
        for name, value in headers.items():
            assert part.headers.get(name) == value
    streamed = list(iter_parts(iter(chunked(body, cuts)), boundary))
    assert [bytes(p.content) for p in streamed] == [content for _, content in parts]


@FUZZ
@given(st.text(max_size=120))
def test_any_content_type_gives_parts_or_multipart_error(content_type: str) -> None:
    body = valid_body([({"Content-Type": "application/dicom"}, b"DICM")])
    with contextlib.suppress(MultipartError):
        decode(body, content_type)
