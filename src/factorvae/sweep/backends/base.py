"""The contract of a sweep backend: where the units of a sweep (a trial, or a group of trials
trained as one, ``sweep.packing``) run. A backend is one class:

- ``check()``: refuse bad options before the sweep writes anything;
- ``submit(units, out)``: start every unit (trial directories under ``out/trials/``);
- ``collect()``: yield each trial's result dict (``sweep.trial.run_trial`` / ``run_group``, or
  :func:`failure` for a unit lost outside the trial) as its unit completes;
- ``cancel()``: stop what still runs (an interrupt or an error in the driver);
- ``close()``: release what ``submit`` took (worker processes, a Ray instance it started).

``run(units, out, report)`` is that sequence; ``sweep.engine.run_sweep`` calls it. A backend
that sends one trial per job sets ``packs_groups = False`` and gets units of one trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from factorvae.sweep.spec import Trial
from factorvae.sweep.trialdir import write_error


def failure(t: Trial, out: Path, message: str) -> dict:
    """Record a failure seen from outside the trial (a worker that died, a Ray error)."""
    write_error(out / "trials" / t.id, t.id, message + "\n")
    return {"id": t.id, "status": "failed", "action": "", "seconds": 0.0, "error": message.splitlines()[-1][:500]}


def dirs(out: Path, unit: list[Trial]) -> list[str]:
    return [str(out / "trials" / t.id) for t in unit]


class Backend:
    """Base class: see the module docstring for the contract."""

    #: the name ``factorvae sweep`` selects it by (``sweep.backends.BACKENDS``)
    name = ""
    #: whether a unit may hold a group of trials (False: one trial per unit)
    packs_groups = True

    def describe(self) -> str:
        """Where the trials run, for the sweep's first line."""
        return self.name

    def check(self) -> None:
        """Raise a UserError for a problem found before anything is written (default: none)."""

    def submit(self, units: list[list[Trial]], out: Path) -> None:
        raise NotImplementedError

    def collect(self) -> Iterator[dict]:
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop what still runs; the default has nothing running outside ``collect``."""

    def close(self) -> None:
        """Release what ``submit`` took; the default took nothing."""

    def run(self, units: list[list[Trial]], out: Path, report: Callable[[dict], None]) -> None:
        try:
            self.submit(units, out)
            done = False
            try:
                for result in self.collect():
                    report(result)
                done = True
            finally:
                if not done:
                    self.cancel()
        finally:
            self.close()
