"""Writing two groups of outputs side by side (:func:`xbkg.io.outputs.alongside`)."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from xbkg.errors import RunsFailedError
from xbkg.io.outputs import alongside

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def test_task_runs_in_another_process_at_the_same_time(tmp_path):
    """Each side waits for a file of the other: only concurrent sides finish."""
    task_file, body_file = tmp_path / "task", tmp_path / "body"

    def wait_for(path: Path) -> None:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert time.monotonic() < deadline, f"{path.name} never appeared"
            time.sleep(0.01)

    def task() -> None:
        task_file.write_text(str(os.getpid()))
        wait_for(body_file)

    with alongside(task):
        wait_for(task_file)
        body_file.write_text("")
    assert int(task_file.read_text()) != os.getpid()


def test_the_task_error_is_raised_after_the_body(tmp_path):
    def task() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "archive.nc")

    done = []
    with pytest.raises(OSError, match="No space left") as info, alongside(task):
        done.append(True)
    assert done == [True]
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == "archive.nc"


def test_an_error_that_cannot_be_sent_back_keeps_its_message():
    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"odd {a} {b}")

    def task() -> None:
        raise Odd(1, 2)

    with pytest.raises(OSError, match="Odd: odd 1 2"), alongside(task):
        pass
    # The package's own errors come back as they were.
    with pytest.raises(RunsFailedError, match="OBS_ID 7") as info, alongside(_fail_runs):
        pass
    assert info.value.failures == {7: "OBS_ID 7: no events"}
    assert info.value.skipping


def _fail_runs() -> None:
    raise RunsFailedError({7: "OBS_ID 7: no events"}, skipping=True)


def test_an_error_in_the_body_stops_the_task(tmp_path):
    pid_file = tmp_path / "pid"

    def task() -> None:
        pid_file.write_text(str(os.getpid()))
        time.sleep(30)

    def body_fails() -> None:
        with alongside(task):
            while not pid_file.exists() or not pid_file.read_text():
                time.sleep(0.01)
            raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        body_fails()
    assert time.monotonic() - start < 10
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(int(pid_file.read_text()), 0)


def test_an_interrupt_while_waiting_stops_the_task(tmp_path):
    pid_file = tmp_path / "pid"

    def task() -> None:
        pid_file.write_text(str(os.getpid()))
        time.sleep(30)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), alongside(task):
            signal.setitimer(signal.ITIMER_REAL, 0.3)  # rings once the body is done
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < 10
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left sleeping
        os.kill(int(pid_file.read_text()), 0)


def test_a_killed_task_is_an_error():
    def task() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(OSError, match="killed by signal 9"), alongside(task):
        pass


def test_with_other_threads_the_task_runs_first_in_this_process():
    order = []
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with alongside(lambda: order.append(("task", os.getpid()))):
            order.append(("body", os.getpid()))
    finally:
        stop.set()
        thread.join()
    assert order == [("task", os.getpid()), ("body", os.getpid())]
