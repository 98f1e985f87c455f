"""The in-process backend (``factorvae sweep --workers 0``): units one after another in the
driver process, with its progress bars."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from factorvae.sweep.backends.base import Backend, dirs
from factorvae.sweep.trial import run_group


class LocalBackend(Backend):
    name = "local"

    def __init__(self, progress: bool = True):
        self.progress = progress
        self.units: list = []

    def describe(self) -> str:
        return "this process"

    def submit(self, units, out: Path) -> None:
        self.units, self.out = list(units), out

    def collect(self) -> Iterator[dict]:
        for unit in self.units:
            yield from run_group(unit, dirs(self.out, unit), threads=0, progress=self.progress)
