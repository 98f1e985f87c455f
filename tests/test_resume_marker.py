"""The first metrics.jsonl row after a resume averages only the steps since the resume: it says so
(issue 24), and no other row is marked."""

from __future__ import annotations

import json
from pathlib import Path

CONFIG = Path(__file__).parents[1] / "configs" / "toy.yaml"


def test_first_row_after_a_resume_is_marked(tmp_path, cli):
    out = tmp_path / "r"
    common = ["--config", CONFIG, "--out", out, "--no-progress", "--set", "model.disc.hidden=32",
              "--set", "model.disc.layers=2", "--set", "train.log_every=3", "--set", "train.ckpt_every=2",
              "--set", "train.image_every=1000", "--threads", "1"]
    code, _, err = cli("train", "--steps", "2", *common)
    assert code == 0, err
    code, _, err = cli("train", "--steps", "6", "--resume", *common)
    assert code == 0, err
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in recs if "recon" in r]
    # step 2 was the last row of the first run; step 3 averages step 3 alone (resumed at 2), step 6 a full window
    assert [r["step"] for r in losses] == [2, 3, 6]
    assert [r.get("resumed_from") for r in losses] == [None, 2, None]
