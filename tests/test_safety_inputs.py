"""Hostile and careless input (issue 23), one test per class: nothing escapes its folder (paths
read from disk are confined, outputs go only to new, empty or own folders, never onto an input),
nothing unbounded gets in (size limits and regular-file checks before parsing, trials counted
before expanding, memory checked before allocating), and damaged records end in one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from factorvae.errors import UserError
from test_safety_io import lock_held_elsewhere
from test_safety_runs import TINY, one_line_error, run_copy, snapshot, tiny_run  # noqa: F401 (fixtures)


def codes_file(path: Path) -> Path:
    f = np.array([[i, j] for i in range(2) for j in range(3)])
    np.savez(path, factors=f, codes=f.astype(float), sizes=np.array([2, 3]))
    return path


# -- paths read from disk stay in their folder ---------------------------------------------------

def test_a_crafted_report_manifest_never_removes_a_file_outside(tmp_path):
    from factorvae.report.output import MANIFEST, Staging

    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    (elsewhere / "thesis.tex").write_text("mine too")
    for name, files, dirs in (("abs", [str(victim)], []), ("up", ["../victim.txt"], []),
                              ("link", ["sub/thesis.tex"], ["sub"])):
        out = tmp_path / name
        out.mkdir()
        if name == "link":  # a directory symlink the manifest lists: removing sub/x would follow it
            (out / "sub").symlink_to(elsewhere)
        (out / MANIFEST).write_text(json.dumps({"files": files, "dirs": dirs}))
        with pytest.raises(UserError) as e:
            with Staging(out) as tmp:
                (tmp / "report.html").write_text("new")
        assert "\n" not in str(e.value) and str(out) in str(e.value)
    assert victim.read_text() == "mine" and (elsewhere / "thesis.tex").read_text() == "mine too"


def test_a_pretrained_index_cannot_point_outside_its_registry(tmp_path, monkeypatch):
    from factorvae import pretrained

    registry = tmp_path / "registry"
    registry.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "model.safetensors").write_bytes(b"x")
    monkeypatch.setattr(pretrained, "REGISTRY", registry)
    for folder in ("../outside", str(tmp_path / "outside")):
        (registry / "index.json").write_text(json.dumps({"format": 1, "models": {"m": {"folder": folder, "sha256": "0"}}}))
        with pytest.raises(UserError, match="not a path inside|leads outside"):
            pretrained.locate("m")


# -- outputs: new, empty or the command's own folder; never an input ------------------------------

def test_outputs_go_only_to_new_empty_or_own_folders(tiny_run, tmp_path, cli):
    user = tmp_path / "user"
    user.mkdir()
    (user / "summary.json").write_text("my summary")
    (user / "metrics.jsonl").write_text("my metrics")
    before = snapshot(user)
    from test_sweep import micro_spec, write_spec

    spec = write_spec(tmp_path / "spec.yaml", micro_spec(steps=2, gammas=()))
    for argv in (["train", *TINY, "--steps", "2", "--out", user],
                 ["traverse", tiny_run, "--out", user],
                 ["export", tiny_run, "--out", user],
                 ["sweep", spec, "--out", user, "--no-progress"]):
        code, _, err = cli(*argv)
        one_line_error(code, err, f"--out {user} is not empty")
    code, _, err = cli("traverse", tiny_run, "--out", tiny_run)  # the run itself is no image folder
    one_line_error(code, err, f"--out {tiny_run} is not empty")
    (user / "notes.npz").write_text("x")
    code, _, err = cli("encode", tiny_run, "--out", user / "notes.npz")
    one_line_error(code, err, "is not a codes file")
    grid = codes_file(tmp_path / "g.npz")
    code, _, err = cli("metrics", grid, "--metrics", "mig", "--out", user / "summary.json")
    one_line_error(code, err, "is not a result of factorvae metrics")
    assert snapshot(user) == {**before, "notes.npz": b"x"}
    for _ in range(2):  # a new file, then its own result: both written
        assert cli("metrics", grid, "--metrics", "mig", "--out", tmp_path / "m.json")[0] == 0
    for argv in (["train", *TINY, "--steps", "2"], ["traverse", tiny_run], ["export", tiny_run]):
        code, _, err = cli(*argv, "--out", "")
        one_line_error(code, err, "empty")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for argv in (["train", *TINY, "--steps", "2", "--out", loop], ["export", tiny_run, "--out", loop],
                 ["traverse", tiny_run, "--out", loop]):
        code, _, err = cli(*argv)
        one_line_error(code, err, str(loop), "ELOOP")
    code, _, err = cli("traverse", tiny_run, "--out", tmp_path / "imgs")  # new, then its own: both fine
    assert code == 0 and cli("traverse", tiny_run, "--out", tmp_path / "imgs")[0] == 0, err


def test_an_output_that_is_an_input_is_refused(tmp_path, cli):
    grid = codes_file(tmp_path / "codes.npz")
    data = grid.read_bytes()
    os.link(grid, tmp_path / "alias.npz")
    for out in (grid, tmp_path / "alias.npz", tmp_path / "." / "codes.npz"):
        code, _, err = cli("metrics", grid, "--metrics", "mig", "--out", out)
        one_line_error(code, err, "is the input")
    assert grid.read_bytes() == data


# -- nothing unbounded gets in --------------------------------------------------------------------

def test_configs_and_specs_are_bounded_regular_files(tmp_path, cli):
    from factorvae.io import MAX_CONFIG_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for source, needle in (("/dev/zero", "not a regular file"), (fifo, "not a regular file"),
                           (tmp_path, "not a regular file"), (big, "larger than 1 MiB")):
        t0 = time.perf_counter()
        code, _, err = cli("train", *TINY, "--config", source, "--out", tmp_path / "r")
        one_line_error(code, err, str(source), needle)
        code, _, err = cli("sweep", source, "--out", tmp_path / "s", "--dry-run")
        one_line_error(code, err, needle)
        assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_yaml_aliases_cannot_expand_without_bound(tmp_path, cli):
    laughs = ["name: t", "methods: [{name: vae}]", "description:", "  - &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]  # 10^9 values
    spec = tmp_path / "laughs.yaml"
    spec.write_text("\n".join(laughs) + "\n")
    t0 = time.perf_counter()
    code, _, err = cli("sweep", spec, "--out", tmp_path / "s", "--dry-run")
    one_line_error(code, err, "aliases expand to more than")
    assert time.perf_counter() - t0 < 10
    from factorvae.config import parse_yaml

    assert parse_yaml("a: &x [1, 2]\nb: *x\n", "t") == {"a": [1, 2], "b": [1, 2]}  # a small alias is fine
    looped = parse_yaml("a: &x [1, *x]\n", "t")  # a recursive one is counted, not followed forever
    assert looped["a"][1] is looped["a"]


def test_a_sweep_is_counted_before_it_is_expanded(tmp_path, cli):
    from factorvae.sweep.spec import MAX_TRIALS

    spec = tmp_path / "huge.yaml"
    spec.write_text(json.dumps({"methods": [{"name": "factorvae", "grid": {"gamma": list(range(2000))}}],
                                "seeds": 1000}))
    t0 = time.perf_counter()
    code, _, err = cli("sweep", spec, "--out", tmp_path / "s", "--dry-run")
    one_line_error(code, err, "2,000,000 trials", f"{MAX_TRIALS:,}")
    assert time.perf_counter() - t0 < 5


def test_declared_sizes_are_checked_before_memory_is_taken(tiny_run, tmp_path, cli, monkeypatch):
    # an .npz whose header declares 10^12 codes (8 TB) in a few bytes
    path = tmp_path / "bomb.npz"
    codes_file(tmp_path / "ok.npz")
    with zipfile.ZipFile(tmp_path / "ok.npz") as src, zipfile.ZipFile(path, "w") as dst:
        for name in ("factors.npy", "sizes.npy"):
            dst.writestr(name, src.read(name))
        with dst.open("codes.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 1)})
            f.write(b"\0" * 64)
    code, _, err = cli("metrics", path, "--metrics", "mig")
    one_line_error(code, err, "declares 1,000,000,000,000 elements")
    # an export whose config asks for a model no machine holds: said before it is built
    assert cli("export", tiny_run, "--out", tmp_path / "hf")[0] == 0
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["model"]["z_dim"] = 2**40
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    for argv in (["eval", tmp_path / "hf", "--dry-run"], ["encode", tmp_path / "hf", "--out", tmp_path / "c.npz"]):
        code, _, err = cli(*argv)
        one_line_error(code, err, "out of memory", "GiB")
    # the same guard for any size: a machine with 4 KiB free refuses the tiny run's model too
    from factorvae import io

    monkeypatch.setattr(io, "available_memory", lambda: 4096)
    code, _, err = cli("traverse", tiny_run, "--out", tmp_path / "t")
    one_line_error(code, err, "out of memory")
    code, _, err = cli("metrics", codes_file(tmp_path / "small.npz"), "--metrics", "mig")
    assert code == 0, err  # 208 bytes of arrays fit
    monkeypatch.undo()
    # sizes asked for on the command line beyond any memory: one error line, no traceback
    code, _, err = cli("metrics", tmp_path / "small.npz", "--metrics", "mig", "--set", "mig.num_train=1000000000000")
    assert code == 2 and "Traceback" not in err and err.strip().splitlines()[-1].endswith("ask for smaller sizes"), err


# -- damaged or foreign records: one line, nothing changed -----------------------------------------

def damage_checkpoint(run: Path, change) -> None:
    ckpt = run / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    change(state)
    torch.save(state, ckpt)


def nan_weight(state: dict) -> None:
    state["model"][next(iter(state["model"]))].fill_(float("nan"))


@pytest.mark.parametrize("change, needle", [(lambda s: s.update(step="abc"), "is not a whole number"),
                                            (lambda s: s.update(step=2.5), "is not a whole number"),
                                            (nan_weight, "NaN or infinite"),
                                            (lambda s: s.update(model_name="betatcvae"), "of model 'betatcvae'")])
def test_damaged_checkpoints_are_refused_before_use(run_copy, cli, change, needle):
    damage_checkpoint(run_copy, change)
    before = snapshot(run_copy)
    for argv in (["train", "--out", run_copy, "--resume", "--steps", "6", "--no-progress"],
                 ["eval", run_copy, "--preset", "fast", "--no-progress"]):
        code, _, err = cli(*argv)
        one_line_error(code, err, needle)
    assert snapshot(run_copy) == before


def test_a_checkpoint_of_another_size_is_one_short_line(run_copy, cli):
    (run_copy / "config.yaml").write_text((run_copy / "config.yaml").read_text().replace("z_dim: 3", "z_dim: 5"))
    code, _, err = cli("train", "--out", run_copy, "--resume", "--steps", "6", "--no-progress")
    one_line_error(code, err, "does not fit this model", "of another shape")
    assert len(err) < 400, err


def test_duplicate_keys_are_refused(tmp_path, cli):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: vae\ntrain:\n  steps: 2\nmodel:\n  name: betavae\n")
    code, _, err = cli("train", *TINY, "--config", cfg, "--out", tmp_path / "r")
    one_line_error(code, err, "duplicate key 'model'")
    code, _, err = cli("train", *TINY, "--set", "model.arch={fc: 8, fc: 16}", "--out", tmp_path / "r")
    one_line_error(code, err, "duplicate key 'fc'")
    from factorvae.io import load_json

    (tmp_path / "d.json").write_text('{"model": {}, "model": {"z_dim": 4}}')
    with pytest.raises(UserError, match="duplicate key"):
        load_json(tmp_path / "d.json")
    assert not (tmp_path / "r").exists()


def test_exports_with_foreign_weights_or_config_are_refused(tiny_run, tmp_path, cli):
    from safetensors.torch import load_file, save_file

    hf = tmp_path / "hf"
    assert cli("export", tiny_run, "--out", hf)[0] == 0
    weights = load_file(hf / "model.safetensors")
    save_file({k: (v * 1000).to(torch.int64) for k, v in weights.items()}, hf / "model.safetensors")
    code, _, err = cli("encode", hf, "--out", tmp_path / "c.npz", "--no-progress")
    one_line_error(code, err, "dtype", "int64")
    save_file({k: v.fill_(float("nan")) for k, v in weights.items()}, hf / "model.safetensors")
    code, _, err = cli("eval", hf, "--dry-run")
    one_line_error(code, err, "NaN or infinite")
    (hf / "model.safetensors").unlink()
    (hf / "model.safetensors").symlink_to("/dev/zero")  # unbounded: refused before reading
    code, _, err = cli("eval", hf, "--dry-run")
    one_line_error(code, err, "not a regular file")
    (hf / "config.json").write_text('{"export": {')
    code, _, err = cli("eval", hf, "--dry-run")
    one_line_error(code, err, str(hf / "config.json"), "unreadable JSON")
    assert not (tmp_path / "c.npz").exists()


def test_bad_metric_settings_are_refused_before_the_plan(tiny_run, tmp_path, cli):
    for setting in ("mig.num_train=-5", "mig.num_bins=2.5", "factor_vae.prune_threshold=nan", "sap.num_test=true"):
        code, _, err = cli("eval", tiny_run, "--set", setting, "--no-progress")
        one_line_error(code, err, setting.split("=")[0])
    code, _, err = cli("metrics", codes_file(tmp_path / "c.npz"), "--metrics", "factor_vae",
                       "--set", "factor_vae.num_variance_estimate=null", "--dry-run")
    assert code == 0, err


def test_a_failed_first_export_leaves_no_folder(tiny_run, tmp_path, cli, monkeypatch):
    import factorvae.export

    real = factorvae.export.atomic_write

    def full_at_weights(path, write):
        if Path(path).name == "model.safetensors":
            raise UserError(f"cannot write {path}: ENOSPC (No space left on device)")
        return real(path, write)

    monkeypatch.setattr(factorvae.export, "atomic_write", full_at_weights)
    code, _, err = cli("export", tiny_run, "--out", tmp_path / "hf")
    one_line_error(code, err, "ENOSPC")
    assert not (tmp_path / "hf").exists()


def test_traverse_takes_the_lock_of_the_run_it_writes_into(run_copy, cli):
    before = snapshot(run_copy)
    with lock_held_elsewhere(run_copy / ".lock") as holder:
        code, _, err = cli("traverse", run_copy)
        one_line_error(code, err, f"in use by pid {holder.pid}")
    assert snapshot(run_copy) == before


def test_an_error_without_a_file_name_names_the_output(tmp_path, cli, monkeypatch):
    import factorvae.report

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a short write reports it: no file name

    monkeypatch.setattr(factorvae.report, "build_report", full)
    code, _, err = cli("report", tmp_path / "sweep", "--out", tmp_path / "rep")
    one_line_error(code, err, f"{tmp_path / 'rep'}: ENOSPC")
    assert "?" not in err


def test_a_second_signal_while_the_first_is_handled_waits(monkeypatch):
    from factorvae.trainer import _SignalFlag

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        flag = _SignalFlag()
        flag._handler(signal.SIGINT, None)
        flag.stopping = True  # the checkpoint is being saved: a second Ctrl-C must not break it
        flag._handler(signal.SIGINT, None)
        assert flag.caught == [signal.SIGINT, signal.SIGINT]
        flag.stopping = False
        with pytest.raises(KeyboardInterrupt):  # between steps a second signal still stops at once
            flag._handler(signal.SIGINT, None)
        flag.restore()
    finally:
        signal.signal(signal.SIGINT, old)


def test_a_process_ending_on_a_signal_ignores_the_next_one(monkeypatch):
    import sys

    import factorvae.commands.train
    from factorvae.cli import main

    monkeypatch.setattr(factorvae.commands.train, "run", lambda args: 128 + signal.SIGINT)  # stopped by Ctrl-C
    monkeypatch.setattr(sys, "argv", ["factorvae", "train", "--out", "x"])
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main() == 130
        # a second Ctrl-C during the interpreter's exit (atexit handlers) cannot raise a traceback
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in old)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    assert main(["train", "--out", "x"]) == 130 and signal.getsignal(signal.SIGINT) == old[signal.SIGINT]  # in-process
