"""Runs that fail loudly instead of hanging, and stop signals that save.

Watchdog: a thread that, once the first step is dispatched (compiling it is not
timed), when the training loop reaches no step boundary for
`config.watchdog_seconds` (0 = off), prints which process is stuck where (the step,
what it was doing, every thread's Python stack) and ends the process with exit code
WATCHDOG_EXIT_CODE. It watches the host, so it works alike on CPU, GPU and TPU, and
catches a stuck rank as well as the ranks left waiting for it in a collective (each
process's own watchdog fires). After a stop request (SIGTERM, Ctrl-C) the loop gets
at most STOP_GRACE_SECONDS to reach its next boundary, so a hung run also ends on
SIGTERM. If the watchdog thread itself cannot run (a native call holding the GIL),
faulthandler dumps the stacks and exits BACKSTOP_SECONDS later.

StopSignals: SIGTERM and a first Ctrl-C (SIGINT) ask the loop to save at the next step
boundary and exit 0; a second Ctrl-C aborts at once (exit 130). The signals are read
by a thread (signal.set_wakeup_fd), so they are acted on even while the main thread is
blocked in a device call.
"""
import faulthandler
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Optional

WATCHDOG_EXIT_CODE = 124
ABORT_EXIT_CODE = 130
STOP_GRACE_SECONDS = 120.0
BACKSTOP_SECONDS = 60.0
DEFAULT_WATCHDOG_SECONDS = 1800


def _say(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


class Watchdog:
  """`beat(step, doing)` at every step boundary; `stop()` when the loop is done."""

  def __init__(self, seconds: float, *, process: tuple[int, int] = (0, 1),
               exit_fn: Callable[[int], None] = os._exit):
    self.seconds = float(seconds or 0)
    self._process = process
    self._exit = exit_fn
    self._last = time.monotonic()
    self._step, self._doing = None, "starting"
    self._stop_requested_at: Optional[float] = None
    self._done = threading.Event()
    self._thread = None
    if self.seconds > 0:
      self._thread = threading.Thread(target=self._watch, name="lensfm-watchdog",
                                      daemon=True)
      self._thread.start()

  def beat(self, step: int, doing: str) -> None:
    self._last, self._step, self._doing = time.monotonic(), step, doing

  def stop_requested(self) -> None:
    """A stop signal came: the next boundary is due within STOP_GRACE_SECONDS."""
    self._stop_requested_at = time.monotonic()

  def _allowed(self) -> tuple[float, float]:
    """(deadline, its length) on the monotonic clock."""
    deadline, length = self._last + self.seconds, self.seconds
    if self._stop_requested_at is not None and self._stop_requested_at >= self._last:
      grace = min(self.seconds, STOP_GRACE_SECONDS)
      if self._stop_requested_at + grace < deadline:
        deadline, length = self._stop_requested_at + grace, grace
    return deadline, length

  def _watch(self):
    while not self._done.is_set():
      if self._step is None:  # Not armed yet: the first beat starts the clock.
        self._done.wait(1.0)
        continue
      deadline, length = self._allowed()
      left = deadline - time.monotonic()
      if left <= 0:
        self._fire(length)
        return
      # Re-armed while this thread runs; fires only if it no longer can.
      faulthandler.dump_traceback_later(left + BACKSTOP_SECONDS, exit=True)
      self._done.wait(min(left, 1.0))
    faulthandler.cancel_dump_traceback_later()

  def _fire(self, length: float) -> None:
    index, count = self._process
    after_signal = self._stop_requested_at is not None
    _say(f"lensfm watchdog: process {index} of {count} (host {socket.gethostname()}, pid "
         f"{os.getpid()}) is stuck: no step boundary for {length:.0f} s "
         + ("after a stop signal " if after_signal else "")
         + f"(config.watchdog_seconds={self.seconds:g}); last boundary: step {self._step}, "
         f"then {self._doing}. Python stacks of all threads follow; exiting with code "
         f"{WATCHDOG_EXIT_CODE}.")
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    self._exit(WATCHDOG_EXIT_CODE)

  def stop(self) -> None:
    self._done.set()
    if self._thread is not None:
      self._thread.join(timeout=10)
    faulthandler.cancel_dump_traceback_later()


class StopSignals:
  """SIGTERM / first SIGINT -> `on_stop(name)`; second SIGINT -> exit 130 at once.

  `handle_sigterm=False` leaves SIGTERM to someone else (JAX's preemption service);
  `on_stop` then typically forwards a Ctrl-C to it as SIGTERM.
  """

  def __init__(self, on_stop: Callable[[str], None], *, handle_sigterm: bool = True,
               exit_fn: Callable[[int], None] = os._exit):
    self._on_stop = on_stop
    self._exit = exit_fn
    self._interrupts = 0
    self._previous = {}
    self._wakeup = None
    self.installed = False
    try:
      signals = [signal.SIGINT] + ([signal.SIGTERM] if handle_sigterm else [])
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._in_main_thread)
      read, write = os.pipe()
      os.set_blocking(write, False)
      self._wakeup = (read, write, signal.set_wakeup_fd(write, warn_on_full_buffer=False))
    except ValueError:  # Not the main thread (some notebook runners): no handlers.
      self.restore()
      return
    self.installed = True
    threading.Thread(target=self._read, name="lensfm-signals", daemon=True).start()

  def _in_main_thread(self, signum, frame):
    """Python's handler: runs when the main thread next runs Python code. The reading
    thread acts on every signal at once; SIGTERM is also noted here, so that a signal
    sent just before a step boundary is seen at that boundary (`on_stop` is idempotent)."""
    del frame
    if signum == signal.SIGTERM:
      self._on_stop("SIGTERM")

  def _read(self):
    read = self._wakeup[0]
    while True:
      try:
        data = os.read(read, 64)
      except OSError:
        data = b""
      if not data:  # `restore` closed the write end.
        os.close(read)
        return
      for signum in data:
        self._handle(signum)

  def _handle(self, signum: int) -> None:
    if signum == signal.SIGINT:
      self._interrupts += 1
      if self._interrupts >= 2:
        _say("Second Ctrl-C: aborting now, without saving.")
        self._exit(ABORT_EXIT_CODE)
        return
      _say("Ctrl-C: saving a checkpoint at the next step boundary, then exiting "
           "(press Ctrl-C again to abort without saving).")
      self._on_stop("SIGINT")
    elif signum == signal.SIGTERM:
      self._on_stop("SIGTERM")

  def restore(self) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    self._previous = {}
    if self._wakeup is not None:
      _, write, old = self._wakeup
      signal.set_wakeup_fd(old)
      os.close(write)
      self._wakeup = None
    self.installed = False
