"""The graph fast path (factorvae.fastpath, ``group_strategy: graph``): the step it captures on
CUDA is the eager group step fed through static buffers. On a CPU nothing is captured and the
same function runs eagerly, so a group on the graph path must end where single runs end (float64,
as tests/test_group.py) and log what the vmap path logs. The capture itself needs a GPU:
benchmarks/gpu_check.py compares graph and eager steps on the device."""

from __future__ import annotations

import pytest
import torch

from factorvae.config import resolve
from factorvae.errors import UserError
from factorvae.group import RunGroup
from test_group import BATCH, assert_same_run, build, configs, data, train_alone  # noqa: F401 (fixture)


@pytest.mark.parametrize("name", ["factorvae", "betavae"])
def test_graph_path_ends_where_single_runs_end_and_logs_what_vmap_logs(name, data):
    cfgs = configs(name, 2)
    alone, alone_gens = build(cfgs)
    for m, g in zip(alone, alone_gens):
        train_alone(m, g, data, 3)
    members, gens = build(cfgs)
    graph = RunGroup(members, gens, strategy="graph")
    ref_members, ref_gens = build(cfgs)
    ref = RunGroup(ref_members, ref_gens, strategy="vmap")
    history = []
    for _ in range(3):
        logs = graph.step(*graph.sample(data, BATCH))
        expect = ref.step(*ref.sample(data, BATCH))
        assert list(logs) == list(expect)
        for k in expect:
            torch.testing.assert_close(logs[k].double(), expect[k].double(), rtol=0, atol=1e-6, msg=k)
        history.append({k: v.clone() for k, v in logs.items()})
    # logs handed out are the caller's: a later step does not overwrite them
    assert any(not torch.equal(history[0][k], history[-1][k]) for k in history[0])
    graph.unstack()
    for a, b in zip(alone, members):
        assert_same_run(a, b, atol=1e-10)


def test_graph_path_refuses_inputs_of_another_shape_and_compile(data):
    members, gens = build(configs("factorvae", 2))
    with pytest.raises(UserError, match="exclude each other"):
        RunGroup(members, gens, strategy="graph", compile=True)
    group = RunGroup(members, gens, strategy="graph")
    group.step(*group.sample(data, BATCH))
    with pytest.raises(ValueError, match="one shape"):
        group.step(*group.sample(data, BATCH // 2))


def test_dropping_a_run_rebuilds_the_captured_step(data):
    members, gens = build(configs("betavae", 3))
    group = RunGroup(members, gens, strategy="graph")
    group.step(*group.sample(data, BATCH))
    first = group._graph
    with torch.no_grad():
        group.params["decoder.fc.0.weight"][1, 0, 0] = float("nan")
    logs = group.step(*group.sample(data, BATCH))
    assert group.drop_failed(logs, 2) == [1]
    logs = group.step(*group.sample(data, BATCH))
    assert group._graph is not first and all(v.shape == (2,) for v in logs.values())


def test_config_accepts_the_graph_strategy():
    assert resolve({"train": {"group_strategy": "graph"}})["train"]["group_strategy"] == "graph"
    with pytest.raises(UserError, match="group_strategy"):
        resolve({"train": {"group_strategy": "graphs"}})


@pytest.mark.slow  # dynamo traces four vmapped phase variants: ~30 s on a loaded 2-core CPU
def test_compiled_group_traces_and_equals_the_eager_group(data, monkeypatch):
    """train.compile: dynamo traces each vmapped phase (backend "eager": no C compiler, seconds),
    the phase outputs are cloned between phases, and the recompile budget covers the phases."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: compile_(fn, backend="eager"))
    cfgs = configs("factorvae", 2)
    eager = RunGroup(*build(cfgs), strategy="vmap")
    compiled = RunGroup(*build(cfgs), strategy="vmap", compile=True)
    for _ in range(3):
        expect = eager.step(*eager.sample(data, BATCH))
        logs = compiled.step(*compiled.sample(data, BATCH))
        for k in expect:
            torch.testing.assert_close(logs[k], expect[k], rtol=0, atol=1e-10, msg=k)
    assert torch._dynamo.config.recompile_limit >= 64
    for n, p in eager.params.items():
        torch.testing.assert_close(compiled.params[n], p, rtol=0, atol=1e-10, msg=n)
