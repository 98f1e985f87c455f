"""Vectorised groups (factorvae.group): a group of N runs ends where N single runs end.

Tiny networks on 16x16 images keep this fast. The equivalence tests run in float64: the group's
batched convolutions (vmap folds the run axis into grouped convolutions, batched matmuls) sum in
another order than a single run's, which in float32 gives ~1e-7 relative differences per step
that Adam's normalised updates carry on; in float64 the same reorderings stay ~1e-16 per step,
so after a few steps weights agree to far better than 1e-10 (the tolerance used) unless a batch,
a noise draw, a hyper-parameter or an update order differs, which moves weights by ~lr = 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from factorvae.config import resolve
from factorvae.data.store import ImageData
from factorvae.errors import UserError
from factorvae.group import RunGroup, group_key, groupable
from factorvae.runs import build_model

ARCH = {"image_size": 16, "channels": [4, 4], "fc": 8}
SMALL_D = {"disc": {"hidden": 16, "layers": 2}}
CASES = {
    "vae": ({}, None),
    "betavae": ({}, ("beta", [1.0, 4.0, 16.0])),
    "factorvae": (SMALL_D, ("gamma", [0.0, 10.0, 40.0])),
    "betatcvae": ({"dataset_size": 64}, ("beta", [2.0, 6.0, 10.0])),
}
BATCH, STEPS = 8, 3


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return ImageData("tiny", torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8, generator=g), None)


def configs(name: str, n: int = 3):
    extra, varied = CASES[name]
    out = []
    for i in range(n):
        model = {"name": name, "z_dim": 3, "arch": ARCH, **extra}
        if varied:
            model[varied[0]] = varied[1][i]
        out.append(resolve({"model": model, "train": {"seed": 10 + i}}))
    return out


def build(cfgs, dtype=torch.float64):
    models = []
    for cfg in cfgs:
        m, _ = build_model(cfg, 1, torch.device("cpu"))
        models.append(m.to(dtype))  # in place: the optimisers keep their parameters
    return models, [torch.Generator().manual_seed(1000 + i) for i in range(len(cfgs))]


def train_alone(model, data_gen, data, steps, dtype=torch.float64):
    """The trainer's loop for one run: B then B' from its data generator, then train_step."""
    for step in range(steps):
        x1 = data.sample_batch(BATCH, data_gen).to(dtype)
        x2 = data.sample_batch(BATCH, data_gen).to(dtype) if model.needs_second_batch else None
        model.train_step(x1, x2, step)


def assert_same_run(a, b, atol):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=atol, msg=k)
    for section, opt in a.optimizers().items():
        oa, ob = opt.state_dict(), b.optimizers()[section].state_dict()
        assert oa["param_groups"] == ob["param_groups"]
        assert oa["state"].keys() == ob["state"].keys() and oa["state"]
        for i, st in oa["state"].items():
            for k, v in st.items():
                torch.testing.assert_close(v, ob["state"][i][k], rtol=0, atol=atol, msg=f"{section} {i} {k}")
    assert torch.equal(a.generator.get_state(), b.generator.get_state())  # same noise drawn


@pytest.mark.parametrize("name,strategy", [(name, "vmap") for name in CASES] + [("factorvae", "loop")])
def test_group_ends_where_single_runs_end(name, strategy, data):
    cfgs = configs(name)
    alone, alone_gens = build(cfgs)
    for m, g in zip(alone, alone_gens):
        train_alone(m, g, data, STEPS)
    members, gens = build(cfgs)
    group = RunGroup(members, gens, strategy=strategy)
    for _ in range(STEPS):
        logs = group.step(*group.sample(data, BATCH))
    assert all(v.shape == (3,) for v in logs.values())
    codes = group.representations(data.images(range(5)).double())
    group.unstack()
    for a, b, ga, gb in zip(alone, members, alone_gens, gens):
        assert_same_run(a, b, atol=1e-10)
        assert torch.equal(ga.get_state(), gb.get_state())  # same batches drawn
    for i, a in enumerate(alone):  # the batched encoder gives each run's codes
        torch.testing.assert_close(codes[i], a.representation(data.images(range(5)).double()), rtol=0, atol=1e-10)
    # the per-run hyper-parameter mattered: the runs differ
    if CASES[name][1]:
        w = [dict(m.named_parameters())["encoder.net.0.weight"] for m in members]
        assert not torch.allclose(w[0] - w[1], torch.zeros_like(w[0]), atol=1e-6)


def test_group_in_float32_stays_close(data):
    cfgs = configs("factorvae", 2)
    alone, alone_gens = build(cfgs, torch.float32)
    for m, g in zip(alone, alone_gens):
        train_alone(m, g, data, STEPS, torch.float32)
    members, gens = build(cfgs, torch.float32)
    group = RunGroup(members, gens, strategy="vmap")
    for _ in range(STEPS):
        group.step(*group.sample(data, BATCH))
    group.unstack()
    for a, b in zip(alone, members):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(va, vb, rtol=1e-4, atol=1e-5, msg=k)  # a few Adam steps of lr 1e-4


def test_one_adam_over_stacked_parameters_equals_independent_adams():
    g = torch.Generator().manual_seed(0)
    singles = [torch.randn(5, 3, generator=g).requires_grad_() for _ in range(4)]
    stacked = torch.stack([p.detach() for p in singles]).requires_grad_()
    opts = [torch.optim.Adam([p], lr=1e-2, betas=(0.8, 0.99), eps=1e-6) for p in singles]
    opt = torch.optim.Adam([stacked], lr=1e-2, betas=(0.8, 0.99), eps=1e-6)
    for _ in range(5):
        grads = torch.randn(4, 5, 3, generator=g) * torch.tensor([1e-6, 1.0, 1e3, 0.0])[:, None, None]
        for p, o, gr in zip(singles, opts, grads):
            p.grad = gr.clone()
            o.step()
        stacked.grad = grads.clone()
        opt.step()
    # elementwise arithmetic: bit for bit, for gradients of very different scales
    assert torch.equal(stacked.detach(), torch.stack([p.detach() for p in singles]))
    assert torch.equal(opt.state[stacked]["exp_avg_sq"], torch.stack([o.state[p]["exp_avg_sq"] for p, o in zip(singles, opts)]))


def test_a_diverging_run_is_dropped_and_the_others_continue_unchanged(data):
    cfgs = configs("betavae")
    alone, alone_gens = build(cfgs)
    for m, g in zip(alone, alone_gens):
        train_alone(m, g, data, 4)
    members, gens = build(cfgs)
    group = RunGroup(members, gens, strategy="vmap")
    group.step(*group.sample(data, BATCH))
    with torch.no_grad():
        group.params["decoder.fc.0.weight"][1, 0, 0] = float("nan")  # run 1 diverges
    sums = {}
    for step in range(1, 4):
        logs = group.step(*group.sample(data, BATCH))
        sums = {k: sums.get(k, 0) + v for k, v in logs.items()}
        if step == 2:
            assert group.drop_failed(sums, step + 1) == [1]
            sums = {}
    assert group.failed == {1: 3} and group.ids == [0, 2] and len(group) == 2
    assert all(torch.isfinite(v).all() for v in logs.values())
    group.unstack()
    for i in (0, 2):
        assert_same_run(alone[i], members[i], atol=1e-10)
    assert not torch.isfinite(dict(members[1].named_parameters())["decoder.fc.0.weight"]).all()
    assert group.drop_failed(logs, 4) == []


def test_methods_that_cannot_be_grouped_are_refused(data):
    for name in ("infowgan_gp", "aae"):
        cfg = resolve({"model": {"name": name, "arch": ARCH}})
        m, g = build_model(cfg, 1, torch.device("cpu"))
        assert groupable(m) and name in groupable(m)
        with pytest.raises(UserError, match="one at a time"):
            RunGroup([m], [torch.Generator()])
    assert groupable(build([configs("factorvae")[0]])[0][0]) is None


def test_group_key_ignores_seed_and_per_run_hyperparameters_only():
    a, b, c = configs("betavae")
    assert group_key(a) == group_key(b) == group_key(c)
    lr = resolve({"model": a["model"], "train": a["train"], "optim": {"vae": {"lr": 5e-4}}})
    assert group_key(lr) != group_key(a)
    z = resolve({"model": {**a["model"], "z_dim": 4}, "train": a["train"]})
    assert group_key(z) != group_key(a)


def test_runs_with_different_optimiser_settings_are_refused(data):
    cfgs = configs("vae", 2)
    cfgs[1] = resolve({"model": cfgs[1]["model"], "train": cfgs[1]["train"], "optim": {"vae": {"lr": 1e-3}}})
    members, gens = build(cfgs)
    with pytest.raises(UserError, match="optim.vae"):
        RunGroup(members, gens, strategy="vmap")


def test_bf16_autocast_trains_and_bad_precision_is_refused(data):
    members, gens = build(configs("factorvae", 2), torch.float32)
    with pytest.raises(UserError, match="precision"):
        RunGroup(members, gens, precision="fp8")
    group = RunGroup(members, gens, precision="bf16", strategy="vmap")
    before = group.params["encoder.net.0.weight"].detach().clone()
    logs = group.step(*group.sample(data, BATCH))
    assert all(torch.isfinite(v).all() for v in logs.values())
    assert not torch.equal(before, group.params["encoder.net.0.weight"])
    assert group.params["encoder.net.0.weight"].dtype == torch.float32  # weights stay fp32
