"""Progress of a file transfer, for a person watching: a redrawn bar on a terminal,
plain lines (start, every quarter, end) in a log that is not one."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_MB = 1e6


class Progress:
    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty() if tty is None else tty
        self._label = ""
        self._total = 0
        self._done = 0
        self._began = 0.0
        self._first = 0  # bytes already there when this transfer began (a resume)
        self._drawn = 0.0  # when the bar was last drawn (on a TTY)
        self._quarter_shown = 0  # the last quarter printed (off a TTY)

    def note(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, label: str, total: int, done: int = 0) -> None:
        self._label, self._total, self._done, self._first = label, total, done, done
        self._began = time.monotonic()
        if self.tty:
            self._draw()
            return
        resumed = f", resuming at {done / _MB:.1f} MB" if done else ""
        self.note(f"{label}: {total / _MB:.1f} MB{resumed}")
        self._quarter_shown = self._quarter()

    def advance(self, n: int) -> None:
        self._done += n
        if self.tty:
            # redrawing on every chunk would cost more than the copy on a fast link
            if time.monotonic() - self._drawn >= 0.1:
                self._draw()
        elif self._quarter() > self._quarter_shown and self._done < self._total:
            self._quarter_shown = self._quarter()
            self.note(f"{self._label}: {self._quarter_shown * 25}%")

    def finish(self, outcome: str = "done") -> None:
        if self.tty:
            self._draw()
            self.stream.write("\n")
        self.note(f"{self._label}: {outcome}")

    def _percent(self) -> int:
        return 100 * self._done // self._total if self._total else 100

    def _quarter(self) -> int:
        return self._percent() // 25

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        width = 30
        filled = width * self._percent() // 100
        elapsed = max(self._drawn - self._began, 1e-3)
        rate = (self._done - self._first) / elapsed / _MB
        self.stream.write(
            f"\r{self._label} [{'#' * filled}{'.' * (width - filled)}] {self._percent():3d}% "
            f"{self._done / _MB:.1f}/{self._total / _MB:.1f} MB {rate:.1f} MB/s"
        )
        self.stream.flush()
