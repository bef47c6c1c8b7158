"""multipart/related: media types, streaming and in-memory decoding, streaming encoding."""

from __future__ import annotations

import io
import random
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from dicomframes.errors import MultipartError
from dicomframes.standard import multipart
from dicomframes.standard.multipart import Headers, Part

EXPLICIT_LE = "1.2.840.10008.1.2.1"
ORTHANC_FRAMES_TYPE = (
    f'multipart/related; type="application/octet-stream; transfer-syntax={EXPLICIT_LE}"; '
    "boundary=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def contents(parts: list[Part]) -> list[bytes]:
    return [bytes(part.content) for part in parts]


def tricky_parts(boundary: str, seed: int = 0, count: int = 12) -> list[tuple[dict, bytes]]:
    """Random binary parts full of CRLFs, dashes and near-boundaries (which are not delimiters)."""
    rng = random.Random(seed)
    b = boundary.encode()
    traps = [b"\r\n", b"\n", b"\r\n\r\n", b"--", b"\r\n--", b"--" + b, b"\r\n--" + b[:-1],
             b"\r\n--" + b + b"x", b"\n--" + b + b"-", b"\r\n-" + b, b"--" + b + b"--"]
    parts = []
    for i in range(count):
        pieces = []
        for _ in range(rng.randint(0, 6)):
            pieces.append(rng.randbytes(rng.randint(0, 700)))
            pieces.append(rng.choice(traps))
        content = b"".join(pieces)
        if i % 4 == 1:
            content = b""
        if i % 4 == 2:
            content += b"\r"  # a part ending in CR must keep it
        headers = {"Content-Type": f"application/octet-stream; transfer-syntax={EXPLICIT_LE}",
                   "Content-Location": f"/studies/1/series/2/instances/3/frames/{i + 1}"}
        if i % 5 == 3:
            headers = {}
        parts.append((headers, content))
    return parts


# --- media types ------------------------------------------------------------------------------


def test_parse_media_type_quoting_and_case() -> None:
    assert multipart.parse_media_type(
        'Multipart/Related; TYPE="application/dicom"; Boundary="a b;c\\"d"') == (
        "multipart/related", {"type": "application/dicom", "boundary": 'a b;c"d'})
    assert multipart.parse_media_type("application/json") == ("application/json", {})
    assert multipart.parse_media_type(" text/plain ;charset=UTF-8 ; ; flag") == (
        "text/plain", {"charset": "UTF-8", "flag": ""})
    media_type, params = multipart.parse_media_type(ORTHANC_FRAMES_TYPE)
    assert media_type == "multipart/related"
    assert params == {"type": f"application/octet-stream; transfer-syntax={EXPLICIT_LE}",
                      "boundary": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}


def test_boundary_of_quoted_unquoted_and_missing() -> None:
    assert multipart.boundary_of("multipart/related; boundary=abc123") == "abc123"
    assert multipart.boundary_of('multipart/related; type="x/y"; boundary="q:r=s"') == "q:r=s"
    assert multipart.boundary_of(ORTHANC_FRAMES_TYPE) == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    for value in ("multipart/related", 'multipart/related; type="application/dicom"',
                  "multipart/related; boundary=", 'multipart/related; boundary=""'):
        with pytest.raises(MultipartError, match="no boundary"):
            multipart.boundary_of(value)


def test_transfer_syntax_top_level_and_nested_in_type() -> None:
    assert multipart.transfer_syntax_of(ORTHANC_FRAMES_TYPE) == EXPLICIT_LE
    assert multipart.transfer_syntax_of(
        'multipart/related; type="application/octet-stream"; '
        "transfer-syntax=1.2.840.10008.1.2.4.50; boundary=x") == "1.2.840.10008.1.2.4.50"
    assert multipart.transfer_syntax_of(
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1") == EXPLICIT_LE
    assert multipart.transfer_syntax_of('multipart/related; type="application/dicom"') is None
    assert multipart.transfer_syntax_of("application/dicom") is None


def test_related_content_type_round_trips() -> None:
    boundary = multipart.new_boundary()
    assert len(boundary) <= 70 and boundary != multipart.new_boundary()
    value = multipart.related_content_type(boundary, "application/octet-stream",
                                           transfer_syntax=EXPLICIT_LE)
    assert value.startswith('multipart/related; type="application/octet-stream"')
    assert multipart.boundary_of(value) == boundary
    assert multipart.transfer_syntax_of(value) == EXPLICIT_LE
    quoted = multipart.related_content_type("a b:c", "application/dicom")
    assert multipart.boundary_of(quoted) == "a b:c"
    with pytest.raises(ValueError, match="boundary"):
        multipart.related_content_type("x" * 71, "application/dicom")
    with pytest.raises(ValueError, match="boundary"):
        multipart.related_content_type("bad\r\nboundary", "application/dicom")


def test_part_headers_are_case_insensitive_and_keep_their_names() -> None:
    part = Part({"content-TYPE": f"application/octet-stream; transfer-syntax={EXPLICIT_LE}",
                 "Content-Location": "/frames/1"}, b"abc")
    assert isinstance(part.headers, Headers)
    assert part.content_type == part.headers["Content-Type"] == part.headers["CONTENT-type"]
    assert part.transfer_syntax == EXPLICIT_LE
    assert part.location == "/frames/1"
    assert list(part.headers) == ["content-TYPE", "Content-Location"]
    assert "content-location" in part.headers and 3 not in part.headers
    assert Part().content_type is None and Part().transfer_syntax is None
    assert Part().location is None
    assert "3 bytes" in repr(part)


# --- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("content_length", [False, True])
def test_round_trip_every_chunk_size(content_length: bool) -> None:
    boundary = multipart.new_boundary()
    parts = tricky_parts(boundary, seed=int(content_length))
    body = b"".join(multipart.encode(parts, boundary, chunk_size=1000,
                                     content_length=content_length))
    assert len(body) == multipart.encoded_length(parts, boundary, content_length=content_length)
    content_type = multipart.related_content_type(boundary, "application/octet-stream")
    expected = [content for _, content in parts]

    decoded = multipart.decode(body, content_type)
    assert contents(decoded) == expected
    for (headers, _), part in zip(parts, decoded, strict=True):
        for name, value in headers.items():
            assert part.headers[name] == value
        assert ("Content-Length" in part.headers) == content_length

    for size in (1, 2, 3, 7, 64, 1000, 4099, 65535, 65536, 70001, len(body)):
        streamed = list(multipart.iter_parts(chunked(body, size), boundary))
        assert contents(streamed) == expected, size
        assert [dict(p.headers) for p in streamed] == [dict(p.headers) for p in decoded]


def test_random_chunk_sizes_and_large_parts() -> None:
    rng = random.Random(7)
    boundary = "simple"
    parts = [({"Content-Type": "application/octet-stream"}, rng.randbytes(n))
             for n in (300_000, 0, 1, 150_000, 70_000, 5)]
    body = b"".join(multipart.encode(parts, boundary))
    for _ in range(5):
        pieces, i = [], 0
        while i < len(body):
            step = rng.choice([1, 17, 4096, 65536, 100_000, 400_000])
            pieces.append(body[i : i + step])
            i += step
        assert contents(list(multipart.iter_parts(pieces, boundary))) == [c for _, c in parts]


def test_decode_is_zero_copy() -> None:
    boundary = "b0undary"
    body = b"".join(multipart.encode([({}, b"first"), ({}, b"second part")], boundary))
    for buffer in (body, bytearray(body), memoryview(body)):
        parts = multipart.decode(buffer, f"multipart/related; boundary={boundary}")
        assert contents(parts) == [b"first", b"second part"]
        assert all(isinstance(p.content, memoryview) for p in parts)
        owner = buffer.obj if isinstance(buffer, memoryview) else buffer
        assert all(p.content.obj is owner for p in parts)
    sliced = memoryview(b"XXXX" + body + b"YYYY")[4:-4]  # a view that is not its whole object
    assert contents(multipart.decode(sliced, f"multipart/related; boundary={boundary}")) == [
        b"first", b"second part"]


def test_iter_parts_views_into_chunks_and_joins_across_them() -> None:
    boundary = "k" * 40
    big = random.Random(1).randbytes(200_000)
    body = b"".join(multipart.encode([({}, b"small"), ({}, big), ({}, b"tail")], boundary))
    chunks = chunked(body, 150_000)
    first, second, third = multipart.iter_parts(chunks, boundary)
    assert isinstance(first.content, memoryview) and first.content.obj is chunks[0]
    assert bytes(first.content) == b"small"
    assert bytes(second.content) == big  # spans two chunks: joined once
    assert bytes(third.content) == b"tail"


def test_parts_are_yielded_as_they_arrive_and_reading_stops_at_the_close() -> None:
    boundary = "xyz"
    body = b"".join(multipart.encode([({}, b"one"), ({}, b"two")], boundary))
    close = body.index(b"\r\n--xyz--")
    log: list[str] = []

    def produce() -> Iterator[bytes]:
        log.append("head")
        yield body[: close - 5]
        log.append("rest")
        yield body[close - 5 :]
        log.append("epilogue")
        yield b"garbage after the close delimiter"
        raise AssertionError("read past the closing boundary")

    parts = multipart.iter_parts(produce(), boundary)
    assert bytes(next(parts).content) == b"one"
    assert log == ["head"]
    assert bytes(next(parts).content) == b"two"
    assert list(parts) == []
    assert log == ["head", "rest"]


def test_preamble_epilogue_padding_bare_lf_and_no_headers() -> None:
    body = (b"This is a preamble.\r\n--frontier \t\r\nContent-Type: text/plain\r\n"
            b"X-Folded: first\r\n  second\r\n\r\nhello\r\n--frontier\r\n\r\n"
            b"no headers\r\n--frontier\n"
            b"Content-Type: a/b\n\nbare LF body\n--frontier--\r\nan epilogue\r\n--frontier\r\n")
    for size in (1, 5, len(body)):
        parts = list(multipart.iter_parts(chunked(body, size), "frontier"))
        assert contents(parts) == [b"hello", b"no headers", b"bare LF body"]
        assert parts[0].headers["x-folded"] == "first second"
        assert parts[1].headers == {}
        assert parts[2].content_type == "a/b"
    decoded = multipart.decode(body, 'multipart/related; boundary="frontier"')
    assert contents(decoded) == [b"hello", b"no headers", b"bare LF body"]


def test_near_boundaries_inside_content_are_content() -> None:
    body = (b"--B\r\n\r\n"
            b"a--B\r\nb\r\n--BB\r\nc\r\n--B-x\r\n-B\r\n"  # none of these is a delimiter
            b"\r\n--B\r\n\r\n\r\n--B--")
    assert contents(multipart.decode(body, "multipart/related; boundary=B")) == [
        b"a--B\r\nb\r\n--BB\r\nc\r\n--B-x\r\n-B\r\n", b""]


def test_empty_bodies_and_empty_parts() -> None:
    assert multipart.decode(b"--b--", "multipart/related; boundary=b") == []
    assert list(multipart.iter_parts([b"--b--\r\n"], "b")) == []
    assert list(multipart.encode([], "b")) == [b"--b--\r\n"]
    assert multipart.encoded_length([], "b") == len(b"--b--\r\n")
    # an empty part whose blank line is also the delimiter's CRLF (some encoders do this)
    parts = multipart.decode(b"--b\r\nA: 1\r\n\r\n--b\r\nA: 2\r\n\r\nx\r\n--b--",
                             "multipart/related; boundary=b")
    assert [(p.headers["A"], bytes(p.content)) for p in parts] == [("1", b""), ("2", b"x")]


def test_wrong_content_length_falls_back_to_the_delimiter() -> None:
    for declared in ("3", "9999", "12", "-1", "abc"):
        body = (b"--b\r\nContent-Length: " + declared.encode() +
                b"\r\n\r\n0123456789\r\n--b\r\nContent-Length: 2\r\n\r\nok\r\n--b--")
        for size in (1, 4, len(body)):
            parts = list(multipart.iter_parts(chunked(body, size), "b"))
            assert contents(parts) == [b"0123456789", b"ok"], (declared, size)


def test_truncated_body_raises_at_every_cut() -> None:
    boundary = "cut"
    parts = tricky_parts(boundary, seed=3, count=4)
    body = b"".join(multipart.encode(parts, boundary, content_length=True))
    complete = body.index(b"\r\n--cut--") + len(b"\r\n--cut--")
    content_type = "multipart/related; boundary=cut"
    for cut in range(0, len(body) + 1, 7):
        if cut >= complete:
            assert len(multipart.decode(body[:cut], content_type)) == 4
            continue
        with pytest.raises(MultipartError, match="truncated"):
            multipart.decode(body[:cut], content_type)
        with pytest.raises(MultipartError, match="truncated"):
            list(multipart.iter_parts(chunked(body[:cut], 50), boundary))


def test_missing_or_wrong_boundary_and_malformed_bodies() -> None:
    with pytest.raises(MultipartError, match="no boundary"):
        multipart.decode(b"--b\r\n\r\nx\r\n--b--", "multipart/related")
    with pytest.raises(MultipartError, match="not a multipart"):
        multipart.decode(b"{}", "application/json")
    with pytest.raises(MultipartError, match="truncated or not a multipart"):
        multipart.decode(b"--b\r\n\r\nx\r\n--b--", "multipart/related; boundary=other")
    with pytest.raises(MultipartError, match="header line"):
        multipart.decode(b"--b\r\nno colon here\r\n\r\nx\r\n--b--", "multipart/related; boundary=b")
    with pytest.raises(MultipartError, match="boundary line"):
        multipart.decode(b"--b  junk\r\n\r\nx\r\n--b--", "multipart/related; boundary=b")
    with pytest.raises(MultipartError, match="headers of part 1 longer"):
        list(multipart.iter_parts([b"--b\r\nX: " + b"y" * 70_000], "b"))
    with pytest.raises(MultipartError, match="boundary"):
        list(multipart.iter_parts([b"--\r\n"], ""))
    with pytest.raises(TypeError, match="byte chunks"):
        list(multipart.iter_parts(["--b--"], "b"))
    # a whole body given instead of an iterable of chunks is one chunk, not a run of ints
    assert contents(list(multipart.iter_parts(b"--b\r\n\r\nx\r\n--b--", "b"))) == [b"x"]


def test_a_large_part_costs_one_copy_of_memory() -> None:
    mib = 1 << 20
    block = random.Random(4).randbytes(mib)
    boundary = multipart.new_boundary()
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    count = 40

    def network() -> Iterator[bytes]:  # fresh 1 MiB chunks, as a socket hands them over
        yield head
        for i in range(count):
            yield i.to_bytes(8, "big") + block[8:]
        yield f"\r\n--{boundary}--\r\n".encode()

    tracemalloc.start()
    try:
        (part,) = multipart.iter_parts(network(), boundary)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    view = memoryview(part.content)
    assert view.nbytes == count * mib
    assert all(view[i * mib : i * mib + 8] == i.to_bytes(8, "big") for i in range(count))
    assert view[mib - 16 : mib] == block[-16:]
    # the chunks are gathered into one growing buffer, not held and joined at the end (2x)
    assert peak < 1.35 * count * mib, f"peak {peak / mib:.1f} MiB for a {count} MiB part"


# --- encoding ---------------------------------------------------------------------------------


def test_encode_paths_file_objects_and_buffers(tmp_path: Path) -> None:
    rng = random.Random(5)
    first, second, third = rng.randbytes(10_000), rng.randbytes(3_000), rng.randbytes(2_500)
    path = tmp_path / "a.bin"
    path.write_bytes(first)
    other = tmp_path / "b.bin"
    other.write_bytes(second)
    stream = io.BytesIO(b"SKIPPED" + third)
    stream.read(7)  # a file object is read from its current position
    parts = [({"Content-Type": "application/dicom"}, str(path)),
             ({"Content-Type": "application/dicom"}, other),
             ({"Content-Type": "application/dicom"}, stream),
             ({"Content-Type": "application/dicom"}, bytearray(b"ba")),
             (Headers({"Content-Type": "x/y"}), memoryview(b"mv")),
             Part({"Content-Type": "z/w"}, b"part")]
    boundary = multipart.new_boundary()
    length = multipart.encoded_length(parts, boundary)
    stream.seek(7)
    pieces = list(multipart.encode(parts, boundary, chunk_size=4096))
    assert all(len(piece) <= 4096 for piece in pieces)
    body = b"".join(pieces)
    assert len(body) == length
    assert stream.tell() == 7 + len(third) and not stream.closed
    decoded = multipart.decode(body, multipart.related_content_type(boundary, "application/dicom"))
    assert contents(decoded) == [first, second, third, b"ba", b"mv", b"part"]
    assert [p.content_type for p in decoded] == ["application/dicom"] * 4 + ["x/y", "z/w"]


def test_encoded_length_is_exact_or_none() -> None:
    boundary = "len"
    parts = tricky_parts(boundary, seed=9)
    for content_length in (False, True):
        body = b"".join(multipart.encode(parts, boundary, chunk_size=333,
                                         content_length=content_length))
        assert multipart.encoded_length(parts, boundary, content_length=content_length) == len(body)

    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            return 0

    assert multipart.encoded_length([({}, b"x"), ({}, Pipe())], boundary) is None
    with pytest.raises(TypeError, match="sequence"):
        multipart.encoded_length(iter(parts), boundary)
    # a Content-Length given by the caller is kept, not doubled
    block = b"".join(multipart.encode([({"content-length": "1"}, b"x")], "b", content_length=True))
    assert block.lower().count(b"content-length") == 1


def test_encode_rejects_header_injection_and_bad_input() -> None:
    with pytest.raises(ValueError, match="header"):
        list(multipart.encode([({"X": "a\r\nInjected: 1"}, b"")], "b"))
    with pytest.raises(ValueError, match="header"):
        list(multipart.encode([({"Bad Name": "v"}, b"")], "b"))
    with pytest.raises(ValueError, match="boundary"):
        list(multipart.encode([({}, b"")], "bad boundary "))
    with pytest.raises(TypeError, match="unsupported part content"):
        list(multipart.encode([({}, 42)], "b"))
    with pytest.raises(TypeError, match="binary mode"):
        list(multipart.encode([({}, io.StringIO("text"))], "b"))
    with pytest.raises(FileNotFoundError):
        list(multipart.encode([({}, "/nonexistent/file.dcm")], "b"))


def test_encode_streams_a_file_without_holding_it(tmp_path: Path) -> None:
    size = 48 << 20
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        block = random.Random(2).randbytes(1 << 20)
        for _ in range(size >> 20):
            f.write(block)
    chunk = 1 << 20
    boundary = multipart.new_boundary()
    total = 0
    tracemalloc.start()
    try:
        for piece in multipart.encode([({"Content-Type": "application/dicom"}, path)] * 2,
                                      boundary, chunk_size=chunk):
            assert len(piece) <= chunk
            total += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == multipart.encoded_length([({"Content-Type": "application/dicom"}, path)] * 2,
                                             boundary)
    assert peak < 6 * chunk, f"peak {peak} bytes while streaming {2 * size} bytes"


# --- over real HTTP ---------------------------------------------------------------------------

HTTP_PARTS = [({"Content-Type": f"application/octet-stream; transfer-syntax={EXPLICIT_LE}",
                "Content-Location": f"/frames/{i + 1}"}, random.Random(i).randbytes(n))
              for i, n in enumerate((300_000, 1, 0, 123_457, 65_536))]
HTTP_BOUNDARY = multipart.new_boundary()
HTTP_TYPE = (f'multipart/related; type="application/octet-stream; transfer-syntax={EXPLICIT_LE}";'
             f" boundary={HTTP_BOUNDARY}")


class _StreamingHandler(BaseHTTPRequestHandler):
    """HTTP/1.0: no Content-Length, the body ends when the server closes the connection."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", HTTP_TYPE)
        self.end_headers()
        body = multipart.encode(HTTP_PARTS, HTTP_BOUNDARY, chunk_size=40_000)
        if self.path == "/truncated":
            data = b"".join(body)
            body = iter(chunked(data[: len(data) - 30], 40_000))
        for piece in body:
            self.wfile.write(piece)
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StreamingHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_stream_ending_at_connection_close(http_url: str) -> None:
    with requests.get(http_url + "/frames", stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert "Content-Length" not in response.headers
        content_type = response.headers["Content-Type"]
        assert multipart.transfer_syntax_of(content_type) == EXPLICIT_LE
        parts = list(multipart.iter_parts(response.iter_content(1 << 16),
                                          multipart.boundary_of(content_type)))
    assert contents(parts) == [content for _, content in HTTP_PARTS]
    assert [p.location for p in parts] == [f"/frames/{i + 1}" for i in range(len(HTTP_PARTS))]
    assert {p.transfer_syntax for p in parts} == {EXPLICIT_LE}


def test_stream_cut_before_the_closing_boundary(http_url: str) -> None:
    with requests.get(http_url + "/truncated", stream=True, timeout=10) as response:
        boundary = multipart.boundary_of(response.headers["Content-Type"])
        received = []
        with pytest.raises(MultipartError, match="truncated"):
            for part in multipart.iter_parts(response.iter_content(1 << 16), boundary):
                received.append(bytes(part.content))
    assert received == [content for _, content in HTTP_PARTS[:-1]]
