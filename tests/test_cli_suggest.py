"""Every unknown choice (model, data set, preset, metric, logger) suggests the close match (issue 24)."""

from __future__ import annotations

import pytest

from factorvae.cli import suggest


@pytest.mark.parametrize("argv, typo, meant", [
    (["train", "--model", "factorvea"], "factorvea", "factorvae"),
    (["train", "--dataset", "dsprite"], "dsprite", "dsprites"),
    (["train", "--logger", "tensorbord"], "tensorbord", "tensorboard"),
    (["eval", "RUN", "--preset", "fsat"], "fsat", "fast"),
    (["metrics", "codes.npz", "--metrics", "mgi"], "mgi", "mig"),
])
def test_unknown_choices_suggest_the_close_match(argv, typo, meant, cli, tmp_path):
    argv = [str(tmp_path / a) if a in ("RUN", "codes.npz") else a for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run")]
    code, out, err = cli(*argv)
    assert code == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert f"'{typo}' (did you mean '{meant}'?); choose" in line
    assert not (tmp_path / "run").exists()


def test_no_suggestion_without_a_close_match_or_twice():
    msg = "unknown model 'zzz'; choose one of betavae, factorvae"
    assert suggest(msg) == msg
    once = suggest("unknown model 'betavea'; choose one of betavae, factorvae")
    assert once == "unknown model 'betavea' (did you mean 'betavae'?); choose one of betavae, factorvae"
    assert suggest(once) == once
