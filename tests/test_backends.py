"""Sweep backends (factorvae.sweep.backends): one class each with the same contract (check,
submit, collect, cancel, close); run_sweep takes the object. A backend written outside the
package runs a sweep with nothing else changed."""

from __future__ import annotations

import multiprocessing

import pytest
from test_sweep import micro_spec

from factorvae.errors import UserError
from factorvae.sweep import BACKENDS, get_backend, load_spec, run_sweep
from factorvae.sweep.backends import Backend
from factorvae.sweep.backends.local import LocalBackend
from factorvae.sweep.backends.pool import PoolBackend, _Worker


class Recording(Backend):
    """Runs nothing: answers each trial 'busy' and records the calls."""

    name = "recording"

    def __init__(self, packs_groups=True):
        self.packs_groups = packs_groups
        self.calls: list = []

    def check(self):
        self.calls.append("check")

    def submit(self, units, out):
        self.calls.append("submit")
        self.units = units

    def collect(self):
        self.calls.append("collect")
        for unit in self.units:
            for t in unit:
                yield {"id": t.id, "status": "busy", "action": "skipped", "seconds": 0.0, "error": ""}

    def cancel(self):
        self.calls.append("cancel")

    def close(self):
        self.calls.append("close")


@pytest.mark.parametrize("packs", [True, False])
def test_run_sweep_drives_any_backend_through_the_contract(tmp_path, packs):
    sweep = load_spec(micro_spec(gammas=(10, 40), betas=(), seeds=1))
    b = Recording(packs_groups=packs)
    outcome = run_sweep(sweep, tmp_path / "out", b, progress=False, log=None, group_size=2)
    assert b.calls == ["check", "submit", "collect", "close"]
    assert sorted(r["id"] for r in outcome.results) == sorted(t.id for t in sweep.trials)
    # the two FactorVAE trials share a group key: one unit of two, unless the backend runs one per unit
    assert sorted(len(u) for u in b.units) == ([2] if packs else [1, 1])
    assert (tmp_path / "out" / "results.csv").exists()


def test_an_interrupted_collection_cancels_then_closes(tmp_path):
    sweep = load_spec(micro_spec(gammas=(10, 40), betas=(), seeds=1))
    b = Recording()

    def report(res):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        b.run([[t] for t in sweep.trials], tmp_path, report)
    assert b.calls == ["submit", "collect", "cancel", "close"]


def test_backends_are_selected_by_name():
    assert set(BACKENDS) == {"local", "pool", "ray", "slurm"}
    assert isinstance(get_backend("local", progress=False), LocalBackend)
    assert get_backend("pool", workers=3).describe() == "3 worker process(es)"
    with pytest.raises(UserError, match="unknown sweep backend 'x'"):
        get_backend("x")
    with pytest.raises(UserError, match="--workers must be >= 0"):
        PoolBackend(workers=-1)


def test_pool_workers_may_start_their_own_worker_process():
    """A trial's training starts its evaluation worker (train.eval_async): a daemonic pool
    worker could not (multiprocessing refuses children of daemonic processes)."""
    worker = _Worker(multiprocessing.get_context("spawn"))
    try:
        assert worker.process.is_alive() and not worker.process.daemon
    finally:
        worker.stop(30)
    assert not worker.process.is_alive()
