"""A few daemon threads that run tasks: remote gets and background uploads.

Daemon threads, not ``concurrent.futures``: a task still stuck on a stalled gate must never keep
the helper alive after close (the executor joins its threads at exit). Threads start on demand,
so a build that never needs the remote never starts one.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["Workers"]


class Workers:
    def __init__(self, name: str, max_threads: int) -> None:
        self._name = name
        self._max = max_threads
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._threads = 0
        self._idle = 0
        self._pending = 0  # queued or running
        self._closed = False
        self._failures: set[str] = set()  # kinds of task failure said already: once each

    def submit(self, task: Callable[[], None]) -> None:
        with self._cond:
            self._pending += 1
            if self._idle > 0:
                self._idle -= 1  # a waiting thread will take it
            elif self._threads < self._max:
                self._threads += 1
                threading.Thread(target=self._run, name=f"{self._name}-{self._threads}", daemon=True).start()
        self._tasks.put(task)

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                if not self._closed:
                    task()
            except Exception as exc:  # noqa: BLE001 - a bug in a task must not end its thread: ``submit``
                # counted it idle, and the tasks queued for it would never run (a get never answered)
                self._say_failure(exc)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._idle += 1
                    self._cond.notify_all()

    def _say_failure(self, exc: Exception) -> None:
        """One line per kind of failure: a bug that fails every get would otherwise print a line
        per get, thousands in a build, and bury what go itself prints."""
        kind = type(exc).__name__
        with self._cond:
            if kind in self._failures:
                return
            self._failures.add(kind)
        sys.stderr.write(f"gocacheprog: a {self._name} task failed: {kind}: {exc} (said once per kind)\n")

    def drain(self, timeout: float | None) -> int:
        """Wait until every task ran, at most ``timeout`` seconds; drop the rest.

        Returns how many tasks were still queued or running when the time ran out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            left_over = self._pending
            if left_over:
                self._closed = True  # queued tasks are skipped; running ones end with the process
            return left_over
