"""Progress of long jobs (batch titling, eval, labelling, training): a bar with an ETA on a terminal;
in a log, a line with the rate and ETA every few percent (never more often than every 10 s, and
nothing at all for a job that ends within 10 s)."""

from __future__ import annotations

import sys
import time


def on_terminal(iterable, unit: str):
    """The iterable, with tqdm's bar when stderr is a terminal (a log gets nothing: it has Progress)."""
    if not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, unit=f" {unit}", unit_scale=True, file=sys.stderr)


def duration(seconds: float) -> str:
    """2h05m, 4m10s, 12s."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s"


class Progress:
    """Counts work done out of `total` units; use as a context manager, call update(n)."""

    def __init__(self, total: int, unit: str, label: str = "", show: bool = True, stream=None,
                 every: float = 0.05, min_interval_s: float = 10.0, initial: int = 0, clock=time.monotonic):
        self.total, self.unit, self.label = total, unit, label
        self.clock = clock  # seconds, monotonic (a test gives its own)
        self.stream = stream or sys.stderr
        self.done = self.initial = initial  # a resumed job's rate counts only what this process did
        self.started = self.last_line = self.clock()
        self.step = max(1, round(total * every))  # units between log lines
        self.next_line = initial + self.step
        self.min_interval_s = min_interval_s if show else float("inf")
        self.lines, self.logged = 0, initial  # log lines written, units done at the last one
        self.bar = None
        if show and total and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=f" {unit}", desc=label or None, file=self.stream,
                            smoothing=0.1)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar:
            self.bar.update(n)
            return
        now = self.clock()
        if self.done >= self.next_line and now - self.last_line >= self.min_interval_s:
            self._line(now)
        while self.next_line <= self.done:
            self.next_line += self.step

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        elif self.lines and self.done != self.logged:  # the last line of a job that logged its way
            self._line(self.clock())

    def _line(self, now: float) -> None:
        elapsed = now - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate else 0.0
        share = 100 * self.done / self.total if self.total else 100.0
        prefix = f"{self.label}: " if self.label else ""
        print(f"{prefix}{self.done}/{self.total} {self.unit} ({share:.0f}%), {rate:.2f} {self.unit}/s, "
              f"elapsed {duration(elapsed)}, ETA {duration(eta)}", file=self.stream, flush=True)
        self.last_line, self.lines, self.logged = now, self.lines + 1, self.done
