"""Logging and timing helpers shared by every long step.

Each long step (ray trace, matrix build, optimisation, final dose) is wrapped
in :func:`timed`, which logs its start, its duration and, where the platform
allows, the process peak resident memory.  Timings are also collected in a
:class:`Timings` object so that plans can report them in ``metrics.json``.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

logger = logging.getLogger("sbrtplan")


def get_logger(name: str) -> logging.Logger:
    """Return a child logger of ``sbrtplan`` (``name`` is usually ``__name__``)."""
    if name.startswith("sbrtplan"):
        return logging.getLogger(name)
    return logger.getChild(name)


def peak_memory_mib() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


@dataclass
class Timings:
    """Wall-clock seconds per named step, in the order the steps ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, seconds: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + float(seconds)

    @property
    def total_s(self) -> float:
        return float(sum(self.seconds.values()))

    def as_dict(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        out["total"] = round(self.total_s, 3)
        return out


@contextmanager
def timed(step: str, log: logging.Logger | None = None,
          timings: Timings | None = None) -> Iterator[None]:
    """Log the start and the duration of ``step``; add it to ``timings``."""
    log = log or logger
    log.info("%s ...", step)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        if timings is not None:
            timings.add(step, dt)
        log.info("%s done in %.2f s (peak RSS %.0f MiB)", step, dt, peak_memory_mib())


@contextmanager
def atomic_output(path) -> Iterator["Path"]:
    """Yield a temporary sibling of ``path``; rename it to ``path`` on success.

    Nothing half-written is left behind: if the body raises, the temporary
    file is removed and ``path`` is untouched.  Keep the real suffix at the end
    of the temporary name because some writers (h5py, matplotlib) use it.

    Examples
    --------
    >>> with atomic_output("dose.dcm") as tmp:   # doctest: +SKIP
    ...     ds.save_as(tmp)
    """
    import os
    from pathlib import Path

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".tmp-{os.getpid()}-{p.name}")
    try:
        yield tmp
        os.replace(tmp, p)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
