"""Running a command: in this process within a time bound, or as a real process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_RSS_MB = 2048


@dataclass
class Outcome:
    argv: list[str]
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    error: str | None = None  # the traceback of an exception the command let out
    hung: bool = False
    rss_mb: float = 0.0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Hang(BaseException):
    """Raised in a command that ran past its time bound (a BaseException, so no ``except Exception`` in
    the product swallows it)."""


@contextlib.contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Raise ``Hang`` in the main thread after ``seconds`` (a no-op bound off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"past {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def peak_rss_mb() -> float:
    import resource

    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def invoke(argv: list[str], *, timeout: float = 30.0, env: dict[str, str | None] | None = None) -> Outcome:
    """``t2c ARGV`` in this process through typer's CliRunner, which catches what the command lets out:
    an exception other than ``SystemExit`` is kept as ``error`` (a traceback the user would see)."""
    from typer.testing import CliRunner

    from t2c_monitor.cli import app
    from t2c_monitor.settings import reset_settings_cache

    wide_console()
    if env:
        reset_settings_cache()
    memory_before = _memory_now()
    started = time.perf_counter()
    try:
        with time_bound(timeout):
            result = CliRunner().invoke(app, argv, env=env)
    except Hang:
        return Outcome(argv, None, seconds=time.perf_counter() - started, hung=True, rss_mb=_grown(memory_before))
    finally:
        if env:
            reset_settings_cache()
    seconds = time.perf_counter() - started
    error = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        error = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else repr(result.exception)
    return Outcome(argv, result.exit_code, result.stdout, result.stderr, seconds, error, rss_mb=_grown(memory_before))


def own_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _grown(before: tuple[float, float]) -> float:
    """What the last command cost in memory: how far this process's peak rose above what it held when the
    command started, or 0 when the peak did not rise (an earlier peak is not its own; in a pytest worker that
    has loaded models for other tests, the process's own size is not the command's either)."""
    peak_before, held_before = before
    after = own_peak_mb()
    return after - held_before if after > peak_before else 0.0


def _memory_now() -> tuple[float, float]:
    """(this process's peak so far, what it holds now), in MB."""
    import psutil

    return own_peak_mb(), psutil.Process().memory_info().rss / 2**20


def wide_console() -> None:
    """Print the CLI's tables wide, so a check finds untrusted text on one line."""
    from t2c_monitor.cli.common import console

    console.width = 1000


def run_t2c(argv: list[str], *, env: dict[str, str], timeout: float = 120.0, cwd: Path | None = None,
            max_rss_mb: float = MAX_RSS_MB) -> Outcome:
    """``t2c ARGV`` as a real process: killed (with everything it started) past ``timeout`` seconds or
    ``max_rss_mb`` of memory, which ``hung`` and ``rss_mb`` then say."""
    import tempfile

    import psutil

    executable = Path(sys.executable).with_name("t2c")
    with tempfile.TemporaryFile("w+b") as out, tempfile.TemporaryFile("w+b") as err:
        started = time.perf_counter()
        process = subprocess.Popen([str(executable), *argv], env={**os.environ, **env}, stdout=out, stderr=err,
                                   stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
        peak, hung = 0.0, False
        while process.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, psutil.Process(process.pid).memory_info().rss / 2**20)
            if time.perf_counter() - started > timeout or peak > max_rss_mb:
                hung = time.perf_counter() - started > timeout
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = (f.read().decode(errors="replace") for f in (out, err))
    code = None if hung or peak > max_rss_mb else process.returncode
    return Outcome(argv, code, stdout, stderr, seconds, hung=hung, rss_mb=peak)
