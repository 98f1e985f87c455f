"""factorvae: learn and measure disentangled representations (FactorVAE, Kim & Mnih,
*Disentangling by Factorising*, ICML 2018, and its baselines).

What is here (``help(factorvae.NAME)`` on each):

- ``train(config, out)``: train a model into a run directory; returns its summary
- ``load_run(path)``: a trained model (eval mode), its data set and config, from a run
  directory, an export folder (``factorvae export``) or a pretrained name (``factorvae pretrained``)
- ``evaluate(...)``: the disentanglement metrics on a run, a model or arrays of codes
- ``load_dataset(name)``, ``datasets()``: the data sets (dSprites and 3D Shapes rendered
  procedurally, nothing downloaded) and their names
- ``traverse(run, out)``: latent traversal images of a run's model

Example (FactorVAE on dSprites, scored and traversed)::

    import factorvae
    summary = factorvae.train({"model": {"name": "factorvae", "gamma": 40},
                               "train": {"steps": 4000}}, "runs/api")
    run = factorvae.load_run("runs/api")          # Run(model, dataset, config, step)
    scores = factorvae.evaluate(run, preset="fast")
    print(scores["factor_vae"]["eval_accuracy"], summary["active_dims_kl"])
    factorvae.traverse(run, "runs/api/traversals")  # PNG sheets (one row per latent), GIF

The command line (``factorvae --help``) does the same from a shell.
"""

__all__ = ["train", "load_run", "evaluate", "load_dataset", "datasets", "traverse"]


def train(config=None, out=None, *, resume: bool = False, progress: bool = True, dataset=None) -> dict:
    """Train a model into run directory ``out`` and return its summary (final losses, KL per
    latent, active dimensions, image paths; also written to ``out/summary.json``).

    ``config``: a dict of overrides of the defaults, e.g. ``{"model": {"name": "betavae",
    "beta": 4}, "train": {"steps": 2000, "seed": 1}}``, or the path of a YAML config (see
    configs/); None trains the paper's FactorVAE (γ = 40, Appendix A) on dSprites.
    ``resume=True`` continues the run in ``out`` from its last checkpoint (config from ``out``).
    ``dataset``: an already loaded data set of the config's kind (saves loading it again).
    As ``factorvae train`` (:func:`factorvae.usecases.train.train_run`): torch threads from the
    config, else from the load average; with ``progress``, the expected time first.
    """
    import sys

    from factorvae.config import read_yaml, resolve
    from factorvae.usecases.train import train_run

    if out is None:
        raise TypeError("train() needs out=, the run directory to write")
    cfg = None
    if not resume:
        cfg = resolve(read_yaml(config) if isinstance(config, (str, bytes)) or hasattr(config, "__fspath__")
                      else (config or {}))
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else None
    return train_run(out, cfg, resume=resume, progress=progress, dataset=dataset, say=say, out_flag="out")


def datasets() -> dict:
    """Data set names and what each is (``load_dataset(name)`` loads one)."""
    from factorvae.data import DATASETS

    return {name: info.description for name, info in DATASETS.items()}


def traverse(run, out, limit: float = 2.0, steps: int = 10, references: int = 3) -> dict:
    """Latent traversals of ``run`` (a Run, or any path or name ``load_run`` takes) into
    folder ``out``: one PNG sheet per reference image (one row per latent, ``steps`` values
    from -``limit`` to ``limit``), an animated GIF, reconstructions and prior samples, as
    ``factorvae traverse`` writes them. Returns {kind: path(s) written}."""
    from pathlib import Path

    from factorvae.runs import load_run as _load_run, lock_for_output
    from factorvae.viz.traversals import check_images_out, write_run_images

    out = check_images_out(out)
    r = run if hasattr(run, "model") else _load_run(run)
    with lock_for_output(out):
        return write_run_images(r.model, r.dataset, Path(out), limit=limit, steps=steps, references=references)


_LAZY = {"load_run": "factorvae.runs", "evaluate": "factorvae.usecases.evaluate", "load_dataset": "factorvae.data"}


def __getattr__(name):
    # lazy: `import factorvae` (and `factorvae --help`) stays free of torch until something is used
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'factorvae' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
