"""Evaluate a run: the disentanglement metrics (Kim & Mnih 2018, §4; the others as in
disentanglement_lib) on a run directory, an export folder or a pretrained name, with eval.json
written under the run's lock (:func:`evaluate_run`: ``factorvae eval``, ``factorvae.evaluate``);
:func:`evaluate` is ``factorvae.evaluate``, which also scores models and codes."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable

from factorvae.data import image_channels, require_grid
from factorvae.errors import UserError
from factorvae.io import check_writable
from factorvae.metrics import suite
from factorvae.metrics.api import as_dataset, load_codes, score_model
from factorvae.metrics.codes import Codes
from factorvae.metrics.plan import describe, format_plan
from factorvae.metrics.sampled import check_representation, evaluate_model
from factorvae.runs import RunDir, load_run, open_dataset


def evaluate_run(source, *, metrics=None, preset: str = "dlib", seed: int = 0, overrides: dict | None = None,
                 device: str = "cpu", batch_size: int = 256, progress: bool = True, dry_run: bool = False,
                 say: Callable[[str], None] | None = None,
                 representation: str = "mean") -> tuple[dict | None, Path | None]:
    """Score a run directory, export folder or pretrained name; returns (results, eval.json
    path or None). Checks the options and loads the model first (no data), tells ``say`` the
    plan (metrics, images to encode, expected time and memory); ``dry_run`` stops there
    (results None). A run directory is scored under its lock (a run being trained or scored
    is not scored now) and only if eval.json can be written, then eval.json is written
    atomically (``RunDir.write_eval``); an export or pretrained folder is read, never written.
    ``representation``: ``mean``, ``sampled`` or ``both`` (``metrics.sampled``)."""
    check_representation(representation)
    names = suite.parse_metrics(metrics)
    suite.preset_params(preset), suite.check_overrides(overrides)  # fail before loading
    r = load_run(source, device=device, load_data=False)
    data = r.config.get("data", {})
    grid = require_grid(data.get("name", "?"))
    plan = describe(preset, names, grid=grid, overrides=overrides,
                    channels=image_channels(data["name"], data.get("channels")))
    line = f"{r.dir} (step {r.step:,}): " + format_plan(plan)
    if dry_run:
        if say:
            say(line)
        return None, None
    rd = RunDir(r.dir)
    ours = rd.exists()  # an export or pretrained folder is read, never written
    with rd.lock() if ours else contextlib.nullcontext():
        if ours:
            check_writable(rd.eval_path)  # before minutes of scoring, not after
        if say:
            say(line)
        dataset = open_dataset(r.config, progress=progress)
        results = evaluate_model(r.model, dataset, representation, preset=preset, seed=seed, metrics=names,
                                 batch_size=batch_size, progress=progress, overrides=overrides)
        if ours:
            results = rd.write_eval(results, r.config, r.step)
    return results, (rd.eval_path if ours else None)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def evaluate(source=None, *, model=None, dataset=None, codes=None, factors=None, sizes=None, names=None,
             metrics=None, preset: str = "dlib", seed: int = 0, overrides: dict | None = None,
             device: str = "cpu", batch_size: int = 256, progress: bool = False,
             representation: str = "mean") -> dict:
    """Score a representation with the disentanglement metrics; returns a JSON-ready dict.

    Give exactly one of:

    - ``source``: a run directory (its last checkpoint; eval.json is written there under the
      run's lock, as ``factorvae eval`` writes it), an export folder (``factorvae export``), a run from
      :func:`factorvae.runs.load_run`, a codes file (.npz, ``factorvae encode``), or a
      :class:`~factorvae.metrics.codes.Codes`;
    - ``model=`` with ``dataset=``: a model with ``representation(x)`` (the encoder mean for
      VAEs) or any function mapping images (B, C, 64, 64) in [0, 1] to codes (B, D);
      ``dataset`` is a data set with a factor grid or its name (``"dsprites"``);
    - ``codes=`` (n, D) with ``factors=`` (n, K) classes and ``sizes=`` (K) (and optionally
      ``names=``): every grid point once, or a random sample of grid points of any size.

    ``metrics``: None (all; for a sample, the four it serves), ``"mig,dci"`` or a list of
    ``factor_vae`` (FactorVAE metric, paper §4), ``beta_vae`` (Higgins et al.), ``mig``,
    ``dci``, ``sap``, ``modularity_explicitness``. ``preset``: ``dlib`` (disentanglement_lib's
    study settings), ``paper`` or ``fast``; :func:`factorvae.metrics.plan.describe` says what
    each costs. ``overrides``: ``{"factor_vae": {"num_train": 800}}``. ``seed``: every draw
    comes from it (one generator per metric), so a seed means one result.
    ``representation`` (a model, a run or a run directory): ``mean`` (the encoder means),
    ``sampled`` (one seeded draw z ~ q(z|x) per image) or ``both`` (the means' result plus
    ``sampled``; one encoding pass), as disentanglement_lib scores both (Locatello et al.
    2019, §4; ``metrics.sampled``); codes are scored as given (``mean`` only).

    A random sample cannot serve the FactorVAE and Higgins metrics (they fix one factor at a
    time and need the codes of points they choose): naming them raises a UserError; score the
    model instead. The result has one entry per metric (disentanglement_lib's keys plus
    extras), ``settings`` (preset, seed, parameters, factors; ``sample`` for a sample) and
    ``seconds``. Example::

        import factorvae
        r = factorvae.evaluate("runs/demo", preset="fast")
        r = factorvae.evaluate(codes=z, factors=y, sizes=[3, 6, 40, 32, 32], metrics="mig,dci")
        r["mig"]["discrete_mig"]
    """
    given = [n for n, v in (("source", source), ("model", model), ("codes", codes)) if v is not None]
    if len(given) != 1:
        raise UserError("evaluate: give exactly one of a source (run directory, run, .npz, Codes), model= (with "
                        f"dataset=) or codes= (with factors= and sizes=); got {', '.join(given) or 'none'}")
    check_representation(representation)
    kw = dict(metrics=metrics, preset=preset, seed=seed, overrides=overrides)
    if representation != "mean" and (codes is not None or isinstance(source, Codes)
                                      or (isinstance(source, (str, Path)) and Path(source).is_file())):
        raise UserError(f"evaluate: representation={representation!r} needs a model or a run (codes are "
                        "scored as given); encode it with representation= instead")
    if codes is not None:
        if isinstance(codes, Codes):
            return suite.evaluate(codes, **kw)
        if factors is None or sizes is None:
            raise UserError("evaluate: codes= needs factors= (n, K) classes and sizes= (K) of the factor grid")
        return suite.evaluate(Codes.from_points(factors, codes, sizes, names, source="codes"), **kw)
    if model is not None:
        if representation != "mean":
            return evaluate_model(model, as_dataset(dataset), representation, batch_size=batch_size,
                                  progress=progress, **kw)
        return score_model(model, as_dataset(dataset), kw, batch_size, progress)
    if isinstance(source, Codes):
        return suite.evaluate(source, **kw)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix == ".npz" or path.is_file():
            return suite.evaluate(load_codes(path), **kw)
        return evaluate_run(path, device=device, batch_size=batch_size, progress=progress,
                            say=_stderr if progress else None, representation=representation, **kw)[0]
    if hasattr(source, "model") and hasattr(source, "dataset"):
        if representation != "mean":
            return evaluate_model(source.model, source.dataset, representation, batch_size=batch_size,
                                  progress=progress, **kw)
        return score_model(source.model, source.dataset, kw, batch_size, progress)
    raise UserError(f"evaluate: cannot score a {type(source).__name__}; give a run directory, a run, an .npz or Codes")
