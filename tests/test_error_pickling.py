"""Every dicomframes error pickles and unpickles with its attributes, so that it crosses a
process pool or a Dask worker as itself (issue 18, item 6). The classes are found by
introspection: a class added later is covered without touching this file."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import inspect
import pickle
import socket
from typing import Any

import pytest
from support import require

import dicomframes
from dicomframes import errors

URL = "http://127.0.0.1:9/dicom-web/studies/1.2.3"


def error_classes() -> list[type[BaseException]]:
    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, BaseException) and cls.__module__ == errors.__name__]


def sample_arguments(cls: type[BaseException]) -> dict[str, Any]:
    """A value for every parameter of ``cls.__init__``, distinct per name so a swapped
    attribute shows."""
    values: dict[str, Any] = {
        "status": 418, "method": "DELETE", "url": URL, "message": "it said no",
        "headers": {"Retry-After": "7"}, "body": b"<answer>", "cause": "some cause",
        "hint": "check this", "detail": "library words", "attempts": 3, "deadline": 12.5,
        "expected": 100, "received": 42, "content_type": "text/html", "preview": b"<html>",
        "location": "http://elsewhere:1/x", "host": "0.0.0.0", "port": 11112,
        "path": "/read/only", "reason": "read-only file system", "limit": 1024, "wait": 9.5,
    }
    wanted = inspect.signature(cls.__init__).parameters
    if cls.__init__ is BaseException.__init__ or list(wanted) == ["self", "args", "kwargs"]:
        return {}
    return {name: values[name] for name in wanted if name != "self"}


def build(cls: type[BaseException]) -> BaseException:
    kwargs = sample_arguments(cls)
    return cls(**kwargs) if kwargs else cls("a message naming what went wrong")


def same(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b)
    assert str(a) == str(b)
    assert a.args == b.args
    assert vars(a) == vars(b)


def test_the_classes_are_found() -> None:
    names = {cls.__name__ for cls in error_classes()}
    assert {"DICOMwebError", "NotFound", "EmptyResponse", "AnswerTooLarge", "Unauthorized",
            "Forbidden", "TooManyRequests", "ServiceUnavailable", "PartialContent"} <= names


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_every_error_round_trips_through_pickle(cls: type[BaseException]) -> None:
    error = build(cls)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(error, protocol=protocol))
        same(error, back)
    for name, value in sample_arguments(cls).items():
        if hasattr(error, name):
            assert getattr(pickle.loads(pickle.dumps(error)), name) == value, name


def test_status_errors_keep_their_class_and_attributes() -> None:
    for status, cls in [(401, errors.Unauthorized), (403, errors.Forbidden),
                        (404, errors.NotFound), (429, errors.TooManyRequests),
                        (503, errors.ServiceUnavailable)]:
        error = errors.error_for(status, "GET", URL, "why", {"Retry-After": "3"}, b"raw")
        assert type(error) is cls and isinstance(error, errors.DICOMwebError)
        back = pickle.loads(pickle.dumps(error))
        same(error, back)
        assert (back.status, back.headers, back.body) == (status, {"Retry-After": "3"}, b"raw")


def test_every_error_class_is_exported() -> None:
    for cls in error_classes():
        assert cls.__name__ in dicomframes.__all__, cls.__name__
        assert getattr(dicomframes, cls.__name__) is cls


def raise_not_found(study: str) -> None:
    """Runs in another process."""
    raise errors.error_for(404, "GET", f"{URL}/{study}", "no such study", {"X": "1"}, b"{}")


def test_an_error_crosses_a_process_pool() -> None:
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(raise_not_found, "9.9")
        with pytest.raises(errors.NotFound) as info:
            future.result(timeout=120)
    assert info.value.status == 404
    assert info.value.url == f"{URL}/9.9"
    assert info.value.headers == {"X": "1"}


def raise_too_large(_: int) -> None:
    """Runs on a Dask worker."""
    raise errors.AnswerTooLarge("GET", URL, "too big", limit=1024, received=2048)


def search_closed_port(port: int) -> None:
    """Runs on a Dask worker: a real failed call, whose error holds its cause (requests'
    exception, with the request and its hooks), which distributed pickles too."""
    dicomframes.connect(f"http://127.0.0.1:{port}", retries=0).search_json("study")


def test_errors_cross_a_dask_worker() -> None:
    require(importlib.util.find_spec("distributed") is not None, "distributed",
            "pip install 'dicomframes[dask]'")
    import distributed

    with socket.socket() as closed:  # bound, not listening: connecting is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with distributed.LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                                      dashboard_address=None, host="127.0.0.1") as cluster, \
                distributed.Client(cluster) as dask_client:
            future = dask_client.submit(raise_too_large, 1)
            with pytest.raises(errors.AnswerTooLarge) as info:
                future.result(timeout=120)
            refused = dask_client.submit(search_closed_port, port)
            with pytest.raises(errors.ConnectionRefused) as failed:
                refused.result(timeout=120)
    assert (info.value.limit, info.value.received, info.value.url) == (1024, 2048, URL)
    assert failed.value.url.startswith(f"http://127.0.0.1:{port}/studies")
    assert failed.value.cause == "connection refused"
    # the same error, cause and all, pickles here too (distributed pickles causes)
    back = pickle.loads(pickle.dumps(failed.value))
    assert (type(back), back.url) == (errors.ConnectionRefused, failed.value.url)
