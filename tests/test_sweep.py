"""`factorvae sweep`: spec expansion and validation, local runs (in-process and worker
processes), skip / resume / retry, corrupt trial directories, and the results table."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from factorvae.sweep import aggregate, inspect_trial, load_spec, read_table, run_sweep

TINY = {"z_dim": 3, "arch": {"channels": [4, 4, 4, 4], "fc": 8}}


def micro_spec(steps: int = 20, gammas=(10,), betas=(1,), seeds=1, metrics=("factor_vae", "beta_vae")) -> dict:
    """A sweep of tiny models on the toy data set: seconds per trial."""
    methods = []
    if betas:
        methods.append({"name": "betavae", "grid": {"beta": list(betas)}})
    if gammas:
        methods.append({"name": "factorvae", "set": {"model.disc": {"hidden": 16, "layers": 2}},
                        "grid": {"gamma": list(gammas)}})
    return {
        "name": "micro",
        "base": {"data": {"name": "toy"}, "model": copy.deepcopy(TINY),
                 "train": {"steps": steps, "log_every": 5, "ckpt_every": 5, "image_every": 10_000, "threads": 1,
                           "true_tc_every": 10, "true_tc_samples": 100, "true_tc_data": 500}},
        "methods": methods,
        "seeds": seeds,
        "eval": {"preset": "fast", "metrics": list(metrics), "recon_images": 256,
                 "true_tc": {"samples": 100, "data": 500}, "log_likelihood": {"images": 4, "samples": 4}},
    }


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


# -- expansion -------------------------------------------------------------------------------

def test_expansion_is_the_product_of_methods_grids_seeds_and_datasets():
    spec = micro_spec(gammas=(10, 40), betas=(1, 4, 8), seeds=[3, 5])
    spec["methods"][0]["grid"]["model.z_dim"] = [2, 3]  # a second grid axis, full path
    sweep = load_spec(spec)
    assert len(sweep.trials) == (3 * 2 + 2) * 2
    ids = [t.id for t in sweep.trials]
    assert len(set(ids)) == len(ids)
    t = next(t for t in sweep.trials if t.method == "factorvae" and t.params == {"model.gamma": 40} and t.seed == 5)
    assert t.id.startswith("factorvae-gamma40-seed5-") and len(t.id.split("-")[-1]) == 8
    assert t.setting == "factorvae gamma=40"
    assert t.config["model"]["gamma"] == 40 and t.config["train"]["seed"] == 5
    assert t.config["model"]["disc"]["hidden"] == 16 and t.config["train"]["steps"] == 20
    b = next(t for t in sweep.trials if t.method == "betavae" and t.params == {"model.beta": 8, "model.z_dim": 2})
    assert b.id.startswith("betavae-beta8-z_dim2-seed") and b.config["model"]["z_dim"] == 2

    # ids are stable, change with the experiment, not with machine-only keys
    again = load_spec(copy.deepcopy(spec))
    assert [t.id for t in again.trials] == ids
    machine = copy.deepcopy(spec)
    machine["base"]["train"].update(threads=2, device="cpu")
    assert [t.id for t in load_spec(machine).trials] == ids
    longer = copy.deepcopy(spec)
    longer["base"]["train"]["steps"] = 21
    assert not set(t.id for t in load_spec(longer).trials) & set(ids)
    # data sets multiply too and appear in the id
    two = copy.deepcopy(spec)
    two["datasets"] = ["toy", {"name": "dsprites"}]
    assert len(load_spec(two).trials) == 2 * len(ids)
    assert any("-dsprites-" in t.id for t in load_spec(two).trials)


def test_shipped_specs_expand():
    root = Path(__file__).resolve().parents[1] / "configs" / "sweeps"
    paper = load_spec(root / "paper_2dshapes.yaml")
    assert len(paper.trials) == 120 and {t.config["train"]["steps"] for t in paper.trials} == {300_000}
    assert sorted({t.params.get("model.gamma") for t in paper.trials if t.method == "factorvae"}) == [10, 20, 30, 40, 50, 100]
    assert sorted({t.params.get("model.beta") for t in paper.trials if t.method == "betavae"}) == [1, 2, 4, 6, 8, 16]
    assert {t.seed for t in paper.trials} == set(range(10))
    assert len(load_spec(root / "paper_3dshapes.yaml").trials) > 0
    assert len(load_spec(root / "smoke.yaml").trials) == 4
    assert len(load_spec(root / "reduced_2dshapes.yaml").trials) == 8


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s["methods"].append({"name": "nosuchvae"}), "unknown model 'nosuchvae'"),
    (lambda s: s["methods"][1]["grid"].update(gamma=[]), "non-empty list"),
    (lambda s: s["methods"][1]["grid"].update(gamma=10), "non-empty list"),
    (lambda s: s["methods"][1]["grid"].update(gamma=["abc"]), "model.gamma must be a number"),
    (lambda s: s["methods"][0]["grid"].update(beta=[-1]), "model.beta must be >= 0"),
    (lambda s: s.update(seeds=0), "seeds"),
    (lambda s: s.update(seeds=[1, 1]), "repeated seed"),
    (lambda s: s.update(colour="red"), "unknown spec key(s): colour"),
    (lambda s: s.update(seed=3), "unknown spec key(s): seed (did you mean seeds?)"),
    (lambda s: s["methods"][0].update(grids={}), "methods[0]: unknown method key(s): grids (did you mean grid?)"),
    (lambda s: s["base"].update({"optim.vae.lrr": 0.1}), "unknown optim.vae option(s): lrr (did you mean lr?)"),
    (lambda s: s["methods"][1]["set"].update({"optim.vea": {"lr": 0.1}}), "unknown optim section(s): vea (did you mean vae?)"),
    (lambda s: s["methods"][1]["grid"].update({"optim.disc.lr_": [0.1]}), "unknown optim.disc option(s): lr_"),
    (lambda s: s["base"]["data"].update(nmae="toy"), "unknown data option(s): nmae (did you mean name?)"),
    (lambda s: s["eval"].update(recon_image=3), "unknown eval option(s): recon_image (did you mean recon_images?)"),
    (lambda s: s["eval"]["true_tc"].update(sample=3), "unknown eval.true_tc option(s): sample (did you mean samples?)"),
    (lambda s: s["eval"].update(metrics=["nope"]), "eval.metrics"),
    (lambda s: s["eval"].update(preset="slow"), "eval.preset"),
    (lambda s: s["base"]["train"].update(stepz=3), "unknown train option(s): stepz (did you mean steps?)"),
    (lambda s: s.update(datasets=["mnist"]), "unknown data set 'mnist'"),
    (lambda s: s.update(methods=[]), "'methods' must be a non-empty list"),
])
def test_bad_specs_give_one_message_and_exit_2(tmp_path, cli, mutate, message):
    spec = micro_spec(betas=(1,), gammas=(10,))
    mutate(spec)
    code, out, err = cli("sweep", write_spec(tmp_path / "s.yaml", spec), "--out", tmp_path / "out")
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "trials").exists()


def test_missing_or_unreadable_spec_file(tmp_path, cli):
    code, _, err = cli("sweep", tmp_path / "nope.yaml", "--out", tmp_path / "o")
    assert code == 2 and "not found" in err
    (tmp_path / "bad.yaml").write_text("methods: [unclosed\n")
    code, _, err = cli("sweep", tmp_path / "bad.yaml", "--out", tmp_path / "o")
    assert code == 2 and "not a readable YAML file" in err


# -- running ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """Two trials run by the CLI in one worker process, then the table."""
    from factorvae.cli import main

    root = tmp_path_factory.mktemp("sweep")
    spec = write_spec(root / "micro.yaml", micro_spec(steps=20))
    out = root / "out"
    t0 = time.time()
    code = main(["sweep", str(spec), "--out", str(out), "--workers", "1", "--no-progress"])
    return {"code": code, "out": out, "spec": spec, "seconds": time.time() - t0}


def test_local_sweep_trains_evaluates_and_tabulates(finished_sweep):
    out = finished_sweep["out"]
    assert finished_sweep["code"] == 0
    rows = read_table(out / "results.parquet")
    csv_rows = read_table(out / "results.csv")
    assert len(rows) == len(csv_rows) == 2 and {r["status"] for r in rows} == {"finished"}
    assert [r["trial_id"] for r in rows] == [r["trial_id"] for r in csv_rows]
    fv = next(r for r in rows if r["method"] == "factorvae")
    for col in ("model.gamma", "train.steps", "train.seed", "beta_vae.eval_accuracy",
                "analysis.recon", "analysis.true_tc", "analysis.log_px", "analysis.log_px_k", "final.tc", "recon"):
        assert fv.get(col) is not None, col
    assert fv["model.gamma"] == 10.0 and fv["train.steps"] == 20 and fv["analysis.log_px_k"] == 4
    # 20 steps of a tiny model often leave no latent mean moving: then the metric is n/a, not 0
    fva = fv["factor_vae.eval_accuracy"]
    assert (0 < fva <= 1) if fva is not None else fv["factor_vae.unscorable"].startswith("no active dimensions")
    assert fv["recon"] == fv["analysis.recon"] > 0
    bv = next(r for r in rows if r["method"] == "betavae")
    assert bv.get("model.gamma") is None and bv["model.beta"] == 1.0
    d = out / bv["dir"]
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "eval.json", "analysis.json", "trial.json",
                 "checkpoints/last.pt", "images/traversal_ref0.png"):
        assert (d / name).exists(), name
    trial = json.loads((d / "trial.json").read_text())
    assert trial["attempts"][-1]["status"] == "finished" and trial["attempts"][-1]["pid"] != os.getpid()
    recs = [json.loads(x) for x in (out / fv["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "true_tc" in r] == [10, 20]


def test_rerun_skips_finished_trials(finished_sweep, cli, monkeypatch):
    import factorvae.sweep.trial as sw

    out = finished_sweep["out"]
    evals = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/eval.json")}
    monkeypatch.setattr(sw, "_train", lambda *a, **k: pytest.fail("a finished trial was trained again"))
    code, stdout, _ = cli("sweep", finished_sweep["spec"], "--out", out, "--workers", "0", "--no-progress")
    assert code == 0 and "2 finished" in stdout and "running 0" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("trials/*/eval.json")} == evals


def test_a_failing_trial_is_recorded_and_retried(tmp_path, cli, monkeypatch):
    import factorvae.sweep.trial as sw

    spec = write_spec(tmp_path / "s.yaml", micro_spec(steps=10, gammas=(10,), betas=(1,), metrics=("factor_vae",)))
    real = sw._train
    calls = []

    def flaky(cfg, out, resume, progress, dataset):
        calls.append((Path(out).name, resume))
        if cfg["model"]["name"] == "factorvae":
            raise RuntimeError("boom: simulated crash")
        return real(cfg, out, resume, progress, dataset)

    monkeypatch.setattr(sw, "_train", flaky)
    code, stdout, _ = cli("sweep", spec, "--out", tmp_path / "out", "--workers", "0", "--no-progress")
    assert code == 1  # a failed trial: non-zero, but the others ran
    rows = {r["method"]: r for r in aggregate(tmp_path / "out", write=False)}
    assert rows["betavae"]["status"] == "finished"
    assert rows["factorvae"]["status"] == "failed" and "boom" in rows["factorvae"]["detail"]
    err = tmp_path / "out" / rows["factorvae"]["dir"] / "error.txt"
    assert "Traceback" in err.read_text() and "RuntimeError: boom" in err.read_text()
    assert "failed" in stdout and "boom" in stdout

    monkeypatch.setattr(sw, "_train", real)
    calls.clear()
    monkeypatch.setattr(sw, "_train", lambda *a, **k: (calls.append(Path(a[1]).name), real(*a, **k))[1])
    code, _, _ = cli("sweep", spec, "--out", tmp_path / "out", "--workers", "0", "--no-progress")
    assert code == 0
    assert calls == [rows["factorvae"]["trial_id"]]  # only the failed one ran again
    assert not err.exists()
    rows = read_table(tmp_path / "out" / "results.csv")
    assert {r["status"] for r in rows} == {"finished"}
    attempts = json.loads((tmp_path / "out" / "trials" / calls[0] / "trial.json").read_text())["attempts"]
    assert [a["status"] for a in attempts] == ["failed", "finished"] and attempts[1]["from_status"] == "failed"


def test_a_killed_trial_resumes_from_its_checkpoint(tmp_path, cli, monkeypatch):
    import factorvae.sweep.trial as sw

    spec = micro_spec(steps=300, gammas=(), betas=(1,), metrics=("factor_vae",))
    spec["base"]["train"].update(ckpt_every=10, log_every=10, true_tc_every=0)
    path = write_spec(tmp_path / "s.yaml", spec)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "factorvae", "sweep", str(path), "--out", str(out), "--workers", "0",
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    ckpt = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            found = list(out.glob("trials/*/checkpoints/last.pt"))
            if found:
                state = torch.load(found[0], weights_only=True)
                if state["step"] >= 30:
                    ckpt = state["step"]
                    break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert ckpt is not None, "no checkpoint within the time limit"
    d = next(out.glob("trials/*"))
    st = inspect_trial(d)
    assert st.status == "interrupted" and st.checkpoint_ok and 30 <= st.step < 300

    real = sw._train
    seen = []
    monkeypatch.setattr(sw, "_train", lambda cfg, o, resume, *a: (seen.append(resume), real(cfg, o, resume, *a))[1])
    code, _, err = cli("sweep", path, "--out", out, "--workers", "0", "--no-progress")
    assert code == 0, err
    assert seen == [True]
    steps = [json.loads(x)["step"] for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 301, 10))  # no gap, no duplicate across the kill
    attempts = json.loads((d / "trial.json").read_text())["attempts"]
    assert attempts[-1]["from_status"] == "interrupted" and attempts[-1]["from_step"] >= 30
    assert attempts[-1]["action"].startswith("resumed from step")


def test_corrupt_trial_directories_are_reported_not_fatal(tmp_path, cli):
    spec = micro_spec(steps=10, gammas=(10,), betas=(1, 4), metrics=("factor_vae",))
    path = write_spec(tmp_path / "s.yaml", spec)
    out = tmp_path / "out"
    trials = {t.params.get("model.beta", "f"): t for t in load_spec(spec).trials}
    # 1. half-written: unreadable config.yaml, no results -> moved to quarantine and rerun
    d1 = out / "trials" / trials[1].id
    d1.mkdir(parents=True)
    (d1 / "config.yaml").write_text("model: {name: betavae\n  ::: [")
    # 2. truncated checkpoint -> moved to quarantine and rerun
    d2 = out / "trials" / trials[4].id
    (d2 / "checkpoints").mkdir(parents=True)
    (d2 / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    # 3. looks finished (results) but its trial.json is garbage -> left alone, reported
    d3 = out / "trials" / trials["f"].id
    d3.mkdir(parents=True)
    (d3 / "trial.json").write_text("{not json")
    (d3 / "eval.json").write_text('{"factor_vae": {"eval_accuracy": 0.5}}')
    (d3 / "summary.json").write_text('{"steps": 10}')
    # 4. a stray directory that is no trial of this spec
    (out / "trials" / "stray").mkdir()
    (out / "trials" / "stray" / "config.yaml").write_text("\x00\x01 not yaml: [")

    code, stdout, err = cli("sweep", path, "--out", out, "--workers", "0", "--no-progress")
    assert code == 1  # corrupt trials remain: non-zero, but no crash
    rows = {r["trial_id"]: r for r in read_table(out / "results.parquet")}
    assert rows[trials[1].id]["status"] == rows[trials[4].id]["status"] == "finished"
    assert rows[trials["f"].id]["status"] == "corrupt" and "trial.json" in rows[trials["f"].id]["detail"]
    assert (d3 / "eval.json").read_text() == '{"factor_vae": {"eval_accuracy": 0.5}}'  # results never touched
    assert rows["stray"]["status"] == "corrupt"
    quarantined = [r for r in rows.values() if r["status"] == "quarantined"]
    assert len(quarantined) == 2 and any("checkpoint" in r["detail"] for r in quarantined)
    assert all((out / r["dir"] / "QUARANTINED.txt").exists() for r in quarantined)
    assert "corrupt" in stdout


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += children.get(pid, [])
    return out


def _listening_addresses(pids: list[int]) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state that these processes hold (from /proc)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                hexaddr = cols[1].split(":")[0]
                raw = bytes.fromhex(hexaddr)
                # /proc prints the address as 32-bit words in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw))
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_ray_sweep_runs_trials_as_remote_tasks_listening_on_loopback_only(tmp_path, cli, monkeypatch):
    """`--ray local` starts a real local Ray instance, runs each trial as a Ray task, shuts it
    down; while it runs, every socket Ray listens on is bound to 127.0.0.1 / ::1, never to all
    interfaces or the machine's external address."""
    ray = pytest.importorskip("ray")
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc to list listening sockets")
    seen: list[set] = []
    real_wait = ray.wait

    def wait_and_look(*args, **kwargs):  # the driver waits while the local instance runs trials
        if not seen:
            seen.append(_listening_addresses(_process_tree(os.getpid())))
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(ray, "wait", wait_and_look)
    path = write_spec(tmp_path / "s.yaml", micro_spec(steps=10, gammas=(10,), betas=(1,), metrics=("factor_vae",)))
    code, stdout, err = cli("sweep", path, "--out", tmp_path / "out", "--ray", "local", "--cpus-per-trial", "1",
                            "--no-progress")
    assert code == 0, err
    assert "2 finished" in stdout
    assert not ray.is_initialized()  # the instance this command started is gone
    assert seen and seen[0], "found no listening socket of the local Ray instance"
    assert all(_is_loopback(a) for a in seen[0]), f"Ray listens beyond loopback: {sorted(seen[0])}"
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") is None  # the process environment is left as it was
    rows = read_table(tmp_path / "out" / "results.csv")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}
    for r in rows:
        attempt = json.loads((tmp_path / "out" / r["dir"] / "trial.json").read_text())["attempts"][-1]
        assert attempt["pid"] != os.getpid()  # ran in a Ray worker process


def test_an_unreachable_ray_address_fails_at_once_naming_it(tmp_path, cli):
    pytest.importorskip("ray")
    path = write_spec(tmp_path / "s.yaml", micro_spec(steps=5, gammas=(), metrics=("factor_vae",)))
    code, _, err = cli("sweep", path, "--out", tmp_path / "out", "--ray", "127.0.0.1:1", "--no-progress")
    assert code == 2 and "127.0.0.1:1" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "trials").exists() or not any((tmp_path / "out" / "trials").iterdir())


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path, cli):
    path = write_spec(tmp_path / "s.yaml", micro_spec(steps=5, gammas=(), metrics=("factor_vae",)))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".sweep.lock").write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    code, _, err = cli("sweep", path, "--out", out, "--workers", "0", "--no-progress")
    assert code == 2 and "another sweep" in err
    assert not any((out / "trials").glob("*"))
    (out / ".sweep.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))  # stale
    code, _, err = cli("sweep", path, "--out", out, "--workers", "0", "--no-progress")
    assert code == 0, err
    assert not (out / ".sweep.lock").exists()


#: evaluation that takes no time: these tests are about the engine
NO_EVAL = {"metrics": [], "recon_images": 0, "true_tc": None, "log_likelihood": None}


def _attempt(out: Path, trial_id: str) -> dict | None:
    try:
        return json.loads((out / "trials" / trial_id / "trial.json").read_text())["attempts"][-1]
    except (OSError, ValueError, KeyError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").exists()


def test_a_dead_worker_fails_only_its_own_trial_not_the_others_in_flight(tmp_path, cli):
    """Two workers, two trials in flight: killing one worker (OOM killer, ...) fails its trial;
    the other trial finishes in the same run, without a restart, and the queued third trial
    runs on a worker that is still there or a new one."""
    import threading

    spec = micro_spec(steps=100, gammas=(), betas=(1, 4, 8), metrics=("factor_vae",))
    spec["base"]["train"]["true_tc_every"] = 0
    spec["eval"] = NO_EVAL
    path = write_spec(tmp_path / "s.yaml", spec)
    out = tmp_path / "out"
    victim, other, queued = (t.id for t in load_spec(spec).trials)
    killed = []

    def kill_victim_while_both_train():
        deadline = time.time() + 180
        while time.time() < deadline and not killed:
            a, b = _attempt(out, victim), _attempt(out, other)
            if a and b and all((out / "trials" / t / "checkpoints" / "last.pt").exists() for t in (victim, other)):
                os.kill(a["pid"], signal.SIGKILL)
                killed.append((a["pid"], (out / "trials" / other / "analysis.json").exists()))
            time.sleep(0.05)

    thread = threading.Thread(target=kill_victim_while_both_train)
    thread.start()
    code, stdout, _ = cli("sweep", path, "--out", out, "--workers", "2", "--no-progress")
    thread.join()
    assert killed and code == 1
    assert not killed[0][1], "the other trial had already finished: the test proves nothing"
    rows = {r["trial_id"]: r for r in read_table(out / "results.csv")}
    assert rows[victim]["status"] == "failed" and "worker process died" in rows[victim]["detail"]
    assert rows[other]["status"] == "finished" and rows[queued]["status"] == "finished"
    attempts = json.loads((out / "trials" / other / "trial.json").read_text())["attempts"]
    assert len(attempts) == 1 and attempts[0]["action"] == "trained"  # not failed and retried


def test_workers_exit_when_the_driver_is_killed(tmp_path):
    """kill -9 of the sweep driver: its workers stop within seconds instead of training on."""
    spec = micro_spec(steps=100_000, gammas=(), betas=(1, 4), metrics=("factor_vae",))
    spec["base"]["train"]["true_tc_every"] = 0
    spec["eval"] = NO_EVAL
    path = write_spec(tmp_path / "s.yaml", spec)
    out = tmp_path / "out"
    ids = [t.id for t in load_spec(spec).trials]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    driver = subprocess.Popen([sys.executable, "-m", "factorvae", "sweep", str(path), "--out", str(out),
                               "--workers", "2", "--no-progress"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline and driver.poll() is None:
            attempts = [_attempt(out, t) for t in ids]
            if all(attempts) and all((out / "trials" / t / "checkpoints" / "last.pt").exists() for t in ids):
                pids = [a["pid"] for a in attempts]
                break
            time.sleep(0.1)
        assert pids and all(_alive(p) for p in pids), "the workers never started training"
        driver.kill()
        driver.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "workers train on after their driver died"
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_slurm_sweep_through_submitits_local_executor(tmp_path, cli, monkeypatch):
    """`--slurm` submits one job per trial (here through submitit's local executor: the same
    pickles and job folders as Slurm, run on this machine) into the same trial directories;
    a rerun skips the finished trials."""
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                      os.environ.get("PYTHONPATH", "")]))
    spec = micro_spec(steps=10, gammas=(10,), betas=(1,), metrics=("factor_vae",))
    spec["eval"] = NO_EVAL
    path = write_spec(tmp_path / "s.yaml", spec)
    out = tmp_path / "out"
    code, stdout, err = cli("sweep", path, "--out", out, "--slurm", "--slurm-executor", "local", "--slurm-time", "10",
                            "--no-progress")
    assert code == 0, (stdout, err)
    assert "2 finished" in stdout and "Slurm (local executor)" in stdout
    rows = read_table(out / "results.csv")
    assert {r["status"] for r in rows} == {"finished"} and len(rows) == 2
    for r in rows:
        trial = out / r["dir"]
        assert (trial / "checkpoints" / "last.pt").exists() and (trial / "analysis.json").exists()
        assert json.loads((trial / "trial.json").read_text())["attempts"][-1]["pid"] != os.getpid()  # ran in a job
    assert any((out / "slurm").rglob("*_submission.sh")) or any((out / "slurm").rglob("*.pkl"))
    code, stdout, _ = cli("sweep", path, "--out", out, "--slurm", "--slurm-executor", "local", "--no-progress")
    assert code == 0 and "running 0 on" in stdout


def test_slurm_options_need_slurm(tmp_path, cli):
    path = write_spec(tmp_path / "s.yaml", micro_spec(steps=5, gammas=(), metrics=("factor_vae",)))
    code, _, err = cli("sweep", path, "--out", tmp_path / "out", "--slurm-partition", "gpu")
    assert code == 2 and "need --slurm" in err
    code, _, err = cli("sweep", path, "--out", tmp_path / "out", "--slurm", "--ray", "local")
    assert code == 2 and "one of --ray and --slurm" in err
    assert not (tmp_path / "out").exists()


def test_set_overrides_a_spec_for_a_small_budget(tmp_path, cli):
    # `factorvae sweep SPEC --set ...` (and `make reproduce REPRO_ARGS=...`): the paper's spec at a small budget
    from factorvae.config import parse_set
    from factorvae.sweep import load_spec

    spec = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "paper_core_2dshapes.yaml"
    full = load_spec(spec)
    assert len(full.trials) == 20 and {t.config["train"]["steps"] for t in full.trials} == {300000}
    small = load_spec(spec, sets=parse_set(["seeds=1", "train.steps=300", "eval.preset=fast", "eval.true_tc.data=500"]))
    assert len(small.trials) == 4 and {t.config["train"]["steps"] for t in small.trials} == {300}
    ev = small.trials[0].eval
    assert ev["preset"] == "fast" and ev["true_tc"] == {"samples": 10000, "data": 500}
    assert not {t.id for t in small.trials} & {t.id for t in full.trials}  # new settings, new trials
    code, out, err = cli("sweep", spec, "--out", tmp_path / "s", "--set", "train.stpes=300", "--dry-run")
    assert code == 2 and "stpes" in err and "steps" in err and "Traceback" not in err
    code, out, _ = cli("sweep", spec, "--out", tmp_path / "s", "--set", "seeds=1", "--set", "train.steps=300", "--dry-run")
    assert code == 0 and "4 trial(s)" in out and out.count("steps=300") == 4


def test_the_table_ranks_finished_trials_by_udr_within_their_setting_and_across(tmp_path, cli):
    """results.csv/.parquet: udr_lasso (Duan et al. 2020: among the seeds of the trial's
    setting) and udr_lasso_sweep (among all finished trials), computed after the trials."""
    spec = micro_spec(steps=3, gammas=(), betas=(1, 4), seeds=2, metrics=("mig",))
    spec["eval"]["recon_images"] = 16
    code, out, err = cli("sweep", write_spec(tmp_path / "s.yaml", spec), "--out", tmp_path / "out", "--no-progress")
    assert code == 0, err
    rows = read_table(tmp_path / "out" / "results.parquet")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    for r in rows:
        assert 0 <= r["udr_lasso"] <= 1 and 0 <= r["udr_lasso_sweep"] <= 1, r
    # two seeds per setting: UDR is the median over one other model, so symmetric pairs score alike
    for setting in {r["setting"] for r in rows}:
        pair = [r["udr_lasso"] for r in rows if r["setting"] == setting]
        assert len(pair) == 2
    csv_rows = {r["trial_id"]: r for r in read_table(tmp_path / "out" / "results.csv")}
    for r in rows:
        assert float(csv_rows[r["trial_id"]]["udr_lasso_sweep"]) == pytest.approx(r["udr_lasso_sweep"])
    # the sweep population is larger than a setting: its scores are another ranking, not a copy
    assert [r["udr_lasso_sweep"] for r in rows] != [r["udr_lasso"] for r in rows]
