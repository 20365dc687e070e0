"""What a failed job's `error` says for the exceptions a task can end with."""

from __future__ import annotations

from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from store.settings import Settings
from training.errors import DataError, InvalidParams
from worker.tasks import WorkerRuntime


def runtime(tmp_path: Path) -> WorkerRuntime:
    return WorkerRuntime(Settings(redis_url="redis://127.0.0.1:1/0", home=tmp_path, job_time_limit_s=3))


def test_the_library_s_errors_keep_their_code_and_anything_else_is_an_internal_error(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    assert rt.error_for("job_1", InvalidParams("epochs: must be >= 1"))["type"] == "invalid_params"
    error = rt.error_for("job_1", ZeroDivisionError("division by zero"))
    assert error == {
        "type": "internal_error",
        "message": "the worker failed unexpectedly: ZeroDivisionError: division by zero",
    }


def test_the_soft_time_limit_is_a_time_limit_even_when_a_library_wrapped_it(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    assert rt.error_for("job_1", SoftTimeLimitExceeded())["type"] == "time_limit"
    try:
        try:
            raise SoftTimeLimitExceeded()
        except Exception as inner:  # what a library that wraps its errors does with the signal's exception
            raise RuntimeError("tokenizing failed") from inner
    except RuntimeError as wrapped:
        error = rt.error_for("job_1", wrapped)
    assert error["type"] == "time_limit" and "MLQ_JOB_TIME_LIMIT_S=3" in error["message"]
    try:
        try:
            raise SoftTimeLimitExceeded()
        except Exception:
            raise DataError("the CSV could not be read") from None  # context kept even without `from`
    except DataError as data_error:
        assert data_error.__context__ is not None
        assert rt.error_for("job_1", data_error)["type"] == "time_limit"
