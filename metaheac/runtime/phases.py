"""Wall time, CPU time and peak memory of a run's phases (meta-training, the bank's fits, ...).

Library code marks a phase with `with phase("name"):`, which costs nothing unless a caller records:
`with recording() as phases:` collects every phase run inside it, in order, and prints one line per phase.
The peak RSS of a phase is the process's high-water mark since the phase began: Linux resets it on a
write of "5" to /proc/self/clear_refs; where that is not possible, the figure is the peak since the process
started (`reset` False in the record). A phase made of repeated steps (meta-training) says how long they took
(`note_steps`), so that a run cut short can be scaled by its steps alone, not by its one-off work.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field

_STATUS = "/proc/self/status"


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The process's peak resident memory (since the last reset, on Linux)."""
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


@dataclass
class Phase:
    name: str
    seconds: float
    cpu_seconds: float  # the process's CPU time (every thread): on a shared machine, steadier than the wall
    peak_rss_gb: float
    reset: bool  # whether the peak is the phase's own (else the process's since it started)
    steps: int | None = None  # the repeated steps in it (`note_steps`), and their wall and CPU time
    step_seconds: float | None = None
    step_cpu_seconds: float | None = None

    def line(self) -> str:
        since = "" if self.reset else " (process peak)"
        steps = "" if self.steps is None else f"; {self.steps} steps in {self.step_seconds:.1f} s"
        return (f"phase {self.name}: {self.seconds:.1f} s ({self.cpu_seconds:.1f} CPU-s), peak RSS "
                f"{self.peak_rss_gb:.2f} GB{since}{steps}")


@dataclass
class PhaseLog:
    phases: list[Phase] = field(default_factory=list)
    printer: Callable[[str], None] | None = None
    active: bool = False  # a phase is running
    steps: tuple[int, float, float] | None = None  # the running phase's `note_steps`

    def to_list(self) -> list[dict]:
        return [asdict(p) for p in self.phases]


_log: ContextVar[PhaseLog | None] = ContextVar("metaheac_phases", default=None)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time this block as phase `name` when a `recording` is active. A phase inside another is not recorded
    (its reset of the peak would hide the outer phase's)."""
    log = _log.get()
    if log is None or log.active:
        yield
        return
    reset, log.active, log.steps = _reset_peak(), True, None
    started, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        log.active = False
    done = Phase(name, round(time.perf_counter() - started, 2), round(time.process_time() - cpu, 2),
                 round(peak_rss_bytes() / 2**30, 3), reset, *(log.steps or (None, None, None)))
    log.phases.append(done)
    if log.printer:
        log.printer(done.line())


def note_steps(steps: int, seconds: float, cpu_seconds: float) -> None:
    """Tell the running phase (if recorded) that `steps` repeated steps took `seconds` (`cpu_seconds`) of it."""
    log = _log.get()
    if log is not None and log.active:
        log.steps = (steps, round(seconds, 2), round(cpu_seconds, 2))


@contextlib.contextmanager
def recording(printer: Callable[[str], None] | None = None) -> Iterator[PhaseLog]:
    """Collect the phases run inside this block; `printer` gets one line per phase as it ends."""
    log = PhaseLog(printer=printer)
    token = _log.set(log)
    try:
        yield log
    finally:
        _log.reset(token)
