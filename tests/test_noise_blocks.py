"""Noise drawn in blocks of steps (``Method.noise_block``): one draw per member per block, the same
noise alone and in a group, and a run resumed in the middle of a block continues its sequence."""

from __future__ import annotations

import pytest
import torch

from factorvae.data import load_dataset
from factorvae.data.store import ImageData
from factorvae.group import RunGroup
from factorvae.group_train import train_group
from factorvae.methods import base
from factorvae.trainer import train
from test_group import BATCH, assert_same_run, build, configs, train_alone
from test_group_train import assert_same_checkpoint, ckpt
from test_group_train import configs as run_configs


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return ImageData("tiny", torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8, generator=g), None)


@pytest.fixture(scope="module")
def toy():
    return load_dataset("toy", progress=False)


@pytest.fixture
def block_of_2(monkeypatch):
    monkeypatch.setattr(base, "NOISE_BLOCK", 2)


def count_draws(models, monkeypatch):
    calls = []
    cls = type(models[0])
    real = cls.draw_noise
    monkeypatch.setattr(cls, "draw_noise", lambda self, *a: (calls.append(id(self)), real(self, *a))[1])
    return calls


@pytest.mark.parametrize("strategy", ["vmap", "graph"])
def test_a_group_draws_each_members_noise_once_per_block_as_it_would_alone(data, block_of_2, monkeypatch, strategy):
    cfgs = configs("factorvae")
    alone, alone_gens = build(cfgs)
    for m, g in zip(alone, alone_gens):
        train_alone(m, g, data, 5)  # steps 0-4: blocks [0, 1], [2, 3], [4, 5]
    members, gens = build(cfgs)
    calls = count_draws(members, monkeypatch)
    group = RunGroup(members, gens, strategy=strategy)
    for _ in range(5):
        group.step(*group.sample(data, BATCH))  # no step given: the group counts 0, 1, 2, ...
    assert sorted(calls) == sorted([id(m) for m in members] * 3)  # once per member and block, not per step
    group.unstack()
    for a, b in zip(alone, members):
        assert_same_run(a, b, atol=1e-10)  # includes: the generators stand at the same state


def test_a_run_alone_repeats_a_steps_noise_and_a_new_block_draws_fresh_noise(data, block_of_2):
    m = build(configs("vae", 1))[0][0]
    first, i = m.noise_block(0, BATCH, "cpu", torch.float64)
    again, j = m.noise_block(1, BATCH, "cpu", torch.float64)
    assert (i, j) == (0, 1) and again is first and first["eps"].shape == (2, BATCH, 3)
    nxt, k = m.noise_block(2, BATCH, "cpu", torch.float64)
    assert k == 0 and not torch.equal(nxt["eps"], first["eps"])


@pytest.mark.parametrize("group", [False, True])
def test_a_run_checkpointed_mid_block_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, toy, monkeypatch,
                                                                                  group):
    monkeypatch.setattr(base, "NOISE_BLOCK", 3)  # checkpoints at step 4: the middle of block [3, 5]
    cfg = run_configs(values=(10.0,), steps=6)[0]
    train(cfg, tmp_path / "full", progress=False, dataset=toy)
    part = run_configs(values=(10.0,), steps=4)
    if group:
        train_group(part, [tmp_path / "part"], progress=False, dataset=toy)
    else:
        train(part[0], tmp_path / "part", progress=False, dataset=toy)
    assert "noise_rng" in ckpt(tmp_path / "part")  # the block's start state travels with the checkpoint
    train(cfg, tmp_path / "part", resume=True, progress=False, dataset=toy)
    assert_same_checkpoint(ckpt(tmp_path / "full"), ckpt(tmp_path / "part"), 0.0)
