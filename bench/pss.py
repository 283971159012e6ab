"""Proportional set size (PSS) of the embedded stack, sampled in a background thread.

RSS counts a page once per process that maps it, so a scheduler whose workers and tasks
fork from it (sharing ~640 MB of preloaded imports copy-on-write) would be counted many
times over. PSS splits each shared page between the processes that map it: the sum over
processes is the memory the stack really holds.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

from flywheel import stack


def pss_bytes(proc: psutil.Process) -> int:
    """One process's PSS (0 if it is gone or not readable)."""
    try:
        return int(proc.memory_full_info().pss)
    except (psutil.Error, OSError, AttributeError):
        return 0


def stack_pss(home: Path) -> dict[str, int]:
    """PSS per stack component (its process group and every descendant), in bytes."""
    out: dict[str, int] = {}
    for name, pgid in stack.running(home).items():
        out[name] = sum(pss_bytes(p) for p in stack._members(pgid))
    return out


class PssSampler:
    """Samples the stack under `home` every `every` seconds until stopped; keeps the peak
    of the total and each component's own peak."""

    def __init__(self, home: Path, every: float = 2.0, extra: list[int] | None = None) -> None:
        self.home, self.every = home, every
        self.extra = extra or []  # pids outside the stack counted apart (e.g. the driver)
        self.peak_total = 0
        self.peak_at = 0.0
        self.peaks: dict[str, int] = defaultdict(int)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pss-sampler", daemon=True)
        self._began = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self) -> int:
        per = stack_pss(self.home)
        for pid in self.extra:
            try:
                proc = psutil.Process(pid)
                per["driver"] = pss_bytes(proc) + sum(
                    pss_bytes(c) for c in proc.children(recursive=True)
                )
            except psutil.Error:
                continue
        stack_total = sum(v for k, v in per.items() if k != "driver")
        for name, value in per.items():
            self.peaks[name] = max(self.peaks[name], value)
        if stack_total > self.peak_total:
            self.peak_total, self.peak_at = stack_total, time.monotonic() - self._began
        self.samples += 1
        return stack_total

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def summary(self) -> dict[str, Any]:
        gib = 2**30
        return {
            "peak_gib": round(self.peak_total / gib, 3),
            "peak_at_s": round(self.peak_at, 1),
            "component_peaks_gib": {k: round(v / gib, 3) for k, v in sorted(self.peaks.items())},
            "samples": self.samples,
            "every_s": self.every,
        }
