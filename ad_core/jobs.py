"""Work off the caller's thread: background jobs, one job at a time, and handing over the newest item.

* :class:`Job`: long work (training, tuning, retraining, converting) on a daemon thread. It keeps
  its state (``running``, ``done``, ``failed``, ``stopped``), its message and its outcome, passes a
  stop event to the work, and calls ``on_done`` / ``on_error`` from its thread. The panels run
  every ad_core call through it; so do the ROS node's services.
* :class:`JobSlot`: at most one job at a time (the node's ``~/retrain`` and ``~/convert``): a second
  request while one runs is refused with a message that says what is running since when.
* :class:`NewestSlot`: hands the newest item from one thread to another, never a queue (camera
  frames to the scoring thread, maps to the render thread).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import threading
from collections.abc import Callable
from typing import Any

from ad_core.errors import ADCoreError, TrainingStopped

JOB_STATES = ("running", "done", "failed", "stopped")


class Job:
    """Long work on a background thread: the caller stays responsive and :meth:`stop` sets an event.

    ``target(stop)`` runs on the thread; its return value goes to ``on_done``; an exception goes to
    ``on_error`` (a :class:`TrainingStopped` makes the state ``stopped``, not ``failed``). ``join``
    waits for the thread (tests, notebooks run top to bottom).
    """

    def __init__(
        self,
        target: Callable[[threading.Event], Any],
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        kind: str = "job",
    ) -> None:
        self.kind = kind
        self.stop_event = threading.Event()
        self._target, self._on_done, self._on_error = target, on_done, on_error
        self.result: Any = None
        self.error: BaseException | None = None
        self.state = "running"
        self.message = ""
        self.since = _dt.datetime.now().isoformat(timespec="seconds")
        self.thread = threading.Thread(target=self._run, name=f"ad_core_{kind}", daemon=True)

    def start(self) -> Job:
        """Start the thread."""
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.result = self._target(self.stop_event)
        except BaseException as exc:  # handed to on_error, never lost in a log
            self.error = exc
            self.state = "stopped" if isinstance(exc, TrainingStopped) else "failed"
            self.message = str(exc) if isinstance(exc, ADCoreError) else f"{type(exc).__name__}: {exc}"
            if self._on_error is not None:
                self._on_error(exc)
            return
        self.state, self.message = "done", "" if self.result is None else str(self.result)
        if self._on_done is not None:
            self._on_done(self.result)

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self.thread.is_alive()

    def stop(self) -> None:
        """Ask the work to stop at its next check."""
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the work to end."""
        self.thread.join(timeout)

    def info(self) -> dict[str, str]:
        """``kind``, ``state``, ``since`` and (once ended) ``message``: what a status line shows."""
        out = {"kind": self.kind, "state": self.state, "since": self.since}
        if self.state != "running":
            out["message"] = self.message
        return out


class JobSlot:
    """Runs at most one :class:`Job` at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.job: Job | None = None

    def start(
        self,
        kind: str,
        target: Callable[[threading.Event], Any],
        on_end: Callable[[Job], None] | None = None,
    ) -> tuple[bool, str]:
        """Start ``target`` unless a job is running; ``(started, message)``. ``on_end(job)`` runs when it ends."""
        with self._lock:
            if self.job is not None and self.job.running:
                return False, f"busy: {self.job.kind} running since {self.job.since}; try again when it ends"
            job = Job(target, kind=kind)
            if on_end is not None:
                job._on_done = lambda _result: on_end(job)
                job._on_error = lambda _exc: on_end(job)
            self.job = job.start()
        return True, f"{kind} started"


class NewestSlot:
    """Hands the newest item from one thread to another, never a queue.

    An item still waiting when a newer one comes is replaced, and ``put`` says so.
    """

    def __init__(self) -> None:
        self._item: Any = None
        self._ready = threading.Condition()

    def put(self, item: Any) -> bool:
        """Offer ``item``; True when it replaced one that was still waiting."""
        with self._ready:
            replaced = self._item is not None
            self._item = item
            self._ready.notify()
        return replaced

    def take(self, stop: threading.Event) -> Any:
        """The newest item, waiting for one; None once ``stop`` is set."""
        with self._ready:
            while self._item is None and not stop.is_set():
                self._ready.wait(0.5)
            item, self._item = self._item, None
        return None if stop.is_set() else item

    def wake(self) -> None:
        """Let a waiting ``take`` see that it should stop."""
        with self._ready:
            self._ready.notify_all()


def lower_thread_priority(niceness: int) -> None:
    """Lower the calling thread's CPU priority (Linux: a thread id is a PRIO_PROCESS target); no-op elsewhere."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
