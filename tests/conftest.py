"""Shared fixtures. Generated data sets go to one temporary cache per test session, so tests
never read or write a user's ~/.cache and never depend on an earlier run."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config):
    # FACTORVAE_TEST_THREADS=1 when something else runs on the machine (2 threads per process oversubscribe)
    threads = os.environ.get("FACTORVAE_TEST_THREADS")
    torch.set_num_threads(int(threads) if threads else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("factorvae-cache")
    old = os.environ.get("FACTORVAE_CACHE")
    os.environ["FACTORVAE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FACTORVAE_CACHE", None)
    else:
        os.environ["FACTORVAE_CACHE"] = old


@pytest.fixture(scope="session")
def dsprites_data(_session_cache):
    """The procedural dSprites grid (generated once per session, memory-mapped)."""
    from factorvae.data import load_dataset

    return load_dataset("dsprites", progress=False)


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: ``code, out, err = cli("train", "--model", ...)``."""
    from factorvae.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
