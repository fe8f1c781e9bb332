"""Progress of a long command (`halo catalog`, `halo filter`, `halo score`): one helper for all.

On a terminal, a bar redrawn in place with the count, the rate and the time left; anywhere else (a
Dagster step, a log file, CI) one log line per tenth of the work, so a log is neither silent for an
hour nor flooded.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger(__name__)  # under halo_core: the logger Dagster captures (managed_python_loggers)
BAR_WIDTH = 30
REDRAW_S = 0.2  # a terminal bar redraws at most this often
LOG_STEPS = 10  # log lines over the whole run, when not on a terminal


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:d}:{rest % 60:02d}"


class Progress:
    """``with Progress(total, "scoring", "cutouts") as bar: bar.update(n)``; ``total`` may be unknown
    (None): then the bar shows the count and rate, without a percentage or ETA."""

    def __init__(self, total: int | None, what: str, unit: str = "items", *, stream: TextIO | None = None,
                 terminal: bool | None = None):
        self.total, self.what, self.unit = total, what, unit
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.done, self._logged_step, self._drawn = 0, 0, 0.0
        self.started = time.perf_counter()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The progress as one line: count, share, rate and time left where the total is known."""
        rate = f"{self.rate:,.0f} {self.unit}/s"
        if not self.total:
            return f"{self.what}: {self.done:,} {self.unit}, {rate}"
        share = min(1.0, self.done / self.total)
        eta = _duration((self.total - self.done) / self.rate) if self.rate > 0 else "?"
        return f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({share:.0%}), {rate}, ETA {eta}"

    def update(self, n: int) -> None:
        self.done += n
        if self.terminal:
            now = time.perf_counter()
            if now - self._drawn >= REDRAW_S or (self.total and self.done >= self.total):
                self._drawn = now
                self._draw()
        elif self.total:
            step = min(LOG_STEPS, self.done * LOG_STEPS // self.total)
            if step > self._logged_step:
                self._logged_step = step
                log.info("%s", self.line())

    def _draw(self) -> None:
        filled = int(BAR_WIDTH * min(1.0, self.done / self.total)) if self.total else 0
        bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] " if self.total else ""
        self.stream.write(f"\r{bar}{self.line()}\033[K")
        self.stream.flush()

    def close(self) -> None:
        """The final count and mean rate: the bar ends its line; a log gets its last line if not yet."""
        elapsed = _duration(time.perf_counter() - self.started)
        if self.terminal:
            self._draw()
            self.stream.write(f" in {elapsed}\n")
            self.stream.flush()
        elif not self.total or self._logged_step < LOG_STEPS:
            log.info("%s in %s", self.line(), elapsed)
