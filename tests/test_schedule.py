"""Methods receive the training step (Method.hparams(step), scheduled_hparams): a schedule
such as AnnealedVAE's capacity trains the same alone, in a group (loop and vmap) and resumed,
including group members that resume at different steps."""

from __future__ import annotations

import pytest
import torch
from test_group_train import assert_same_checkpoint, ckpt, configs

from factorvae.data import load_dataset
from factorvae.group_train import train_group
from factorvae.methods import METHODS
from factorvae.methods.vae import BetaVAE
from factorvae.trainer import train


class ScheduledBetaVAE(BetaVAE):
    """β-VAE whose β follows the step (1, 2, 3, 1, ...)·β: the loss depends on the step."""

    name = "scheduled_betavae"
    scheduled_hparams = ("beta",)

    def hparams(self, step: int = 0):
        return {"beta": self.beta * (1 + step % 3)}


@pytest.fixture(scope="module")
def toy():
    return load_dataset("toy", progress=False)


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    monkeypatch.setitem(METHODS, ScheduledBetaVAE.name, ScheduledBetaVAE)


def scheduled(strategy="loop", steps=3):
    cfgs = configs("betavae", strategy=strategy, steps=steps)
    for c in cfgs:
        c["model"]["name"] = ScheduledBetaVAE.name
    return cfgs


@pytest.mark.parametrize("strategy,atol", [("loop", 0.0), ("vmap", 1e-5)])
def test_a_schedule_trains_alike_alone_and_in_a_group(tmp_path, toy, strategy, atol):
    for i, c in enumerate(scheduled(strategy)):
        train(c, tmp_path / f"alone{i}", progress=False, dataset=toy)
    train_group(scheduled(strategy), [tmp_path / f"g{i}" for i in range(2)], progress=False, dataset=toy)
    for i in range(2):
        assert_same_checkpoint(ckpt(tmp_path / f"alone{i}"), ckpt(tmp_path / f"g{i}"), atol)
    # the schedule matters: plain β-VAE with the same β ends elsewhere
    train(configs("betavae", strategy=strategy, steps=3)[0], tmp_path / "plain", progress=False, dataset=toy)
    w = "encoder.net.0.weight"
    assert not torch.allclose(ckpt(tmp_path / "plain")["model"][w], ckpt(tmp_path / "alone0")["model"][w])


def test_members_resumed_at_different_steps_follow_their_own_schedule(tmp_path, toy):
    outs = [tmp_path / "g0", tmp_path / "g1"]
    train_group(scheduled(steps=2), outs, progress=False, dataset=toy)
    train(scheduled(steps=3)[0], outs[0], resume=True, progress=False, dataset=toy)  # run 0 alone to step 3
    train_group(scheduled(steps=4), outs, resume=True, progress=False, dataset=toy)  # steps 3 and 2: two groups
    for i, c in enumerate(scheduled(steps=4)):
        train(c, tmp_path / f"alone{i}", progress=False, dataset=toy)
        assert_same_checkpoint(ckpt(tmp_path / f"alone{i}"), ckpt(outs[i]), 0.0)
