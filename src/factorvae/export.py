"""Exported models: a run's weights, config and model card in the layout of a Hugging Face
model repository, and loading them back without unpickling.

    DIR/model.safetensors   encoder + decoder weights (no optimiser or discriminator state)
    DIR/config.json         the run's resolved config, plus "export": {format, step, model, data}
    DIR/README.md           model card: YAML front matter (library_name, tags, datasets,
                            metrics), data, method, hyper-parameters, scores, a traversal
    DIR/traversal.png       copied from the run's images, when it has one

``load_exported(DIR)`` (or ``load_run(DIR)``) rebuilds the model in eval mode from these files;
``is_export(DIR)`` tells such a directory apart from a run directory. Both live in
``factorvae.runs`` (``load_run`` dispatches to them) and are re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from safetensors.torch import save as st_save

from factorvae.errors import UserError
from factorvae.io import atomic_write, atomic_write_json, check_out_dir, load_json
from factorvae.metrics.registry import RECORDS
from factorvae.metrics.suite import not_scored
# the reading side (load_exported, is_export) lives in factorvae.runs: load_run dispatches to it
from factorvae.runs import EXPORT_CONFIG as CONFIG, EXPORT_WEIGHTS as WEIGHTS
from factorvae.runs import is_export, kept_prefixes, load_exported, load_run

FORMAT = 1
CARD, TRAVERSAL = "README.md", "traversal.png"
#: the method's paper, for the model card
PAPERS = {
    "vae": "Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014",
    "betavae": "Higgins et al., *β-VAE*, ICLR 2017",
    "factorvae": "Kim & Mnih, *Disentangling by Factorising*, ICML 2018",
    "betatcvae": "Chen et al., *Isolating Sources of Disentanglement in VAEs*, NeurIPS 2018",
    "dipvae1": "Kumar et al., *Variational Inference of Disentangled Latent Concepts* (DIP-VAE-I), ICLR 2018",
    "dipvae2": "Kumar et al., *Variational Inference of Disentangled Latent Concepts* (DIP-VAE-II), ICLR 2018",
    "aae": "Makhzani et al., *Adversarial Autoencoders*, ICLR 2016 workshop",
    "infowgan_gp": "Chen et al., *InfoGAN*, NeurIPS 2016, with the WGAN-GP loss of Gulrajani et al., NeurIPS 2017",
}


def export_run(run_dir: str | Path, out: str | Path) -> dict[str, str]:
    """Write the export of a run's last checkpoint to ``out`` (created; an existing non-empty
    folder only if an earlier export wrote it). Returns {kind: path written}."""
    out = check_out_dir(out, lambda p, names: is_export(p) and set(names) <= {CONFIG, WEIGHTS, CARD, TRAVERSAL},
                        "an export folder")
    run = load_run(run_dir, device="cpu", load_data=False)
    prefixes = kept_prefixes(run.model.name)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in run.model.state_dict().items()
             if k.startswith(prefixes)}
    meta = {"format": "pt", "factorvae_export": str(FORMAT), "model": run.model.name, "step": str(run.step)}
    config = {**run.config, "export": {"format": FORMAT, "step": run.step, "model": run.model.name,
                                       "data": run.config["data"]["name"], "networks": [p[:-1] for p in prefixes]}}
    scores = _read_json(run.dir / "eval.json")
    traversal = run.dir / "images" / "traversal_ref0.png"
    written = {}
    new = not out.exists() or not any(out.iterdir())
    try:
        out.mkdir(parents=True, exist_ok=True)
        if traversal.is_file():
            atomic_write(out / TRAVERSAL, lambda f: f.write(traversal.read_bytes()))
            written["traversal"] = str(out / TRAVERSAL)
        atomic_write(out / CARD, lambda f: f.write(model_card(config, scores, traversal.is_file()).encode()))
        atomic_write_json(out / CONFIG, config)
        atomic_write(out / WEIGHTS, lambda f: f.write(st_save(state, metadata=meta)))
    except BaseException as e:
        if new:  # a failed first export (a full disk) leaves no half folder behind
            for name in (TRAVERSAL, CARD, CONFIG, WEIGHTS):
                (out / name).unlink(missing_ok=True)
            try:
                out.rmdir()  # only when empty: nothing else is removed
            except OSError:
                pass
        if isinstance(e, OSError):
            raise UserError(f"cannot write {out}: {e.strerror or e}") from None
        raise
    written.update({"card": str(out / CARD), "config": str(out / CONFIG), "weights": str(out / WEIGHTS)})
    return written


def model_card(config: dict, scores: dict | None, has_traversal: bool) -> str:
    """README.md of an export: Hugging Face front matter, then what the model is."""
    m, d, info = config["model"], config["data"], config["export"]
    family = "gan" if m["name"] == "infowgan_gp" else "vae"
    front = {"library_name": "factorvae", "tags": ["disentanglement", family, "pytorch", m["name"]],
             "datasets": [d["name"]]}
    scored = [k for k in RECORDS if scores and k in scores]
    if scored:
        front["metrics"] = scored
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {m['name']} on {d['name']}", "",
             f"Model `{m['name']}` trained with factorvae for {info['step']:,} steps on `{d['name']}`. "
             f"Method: {PAPERS.get(m['name'], m['name'])}. The FactorVAE metric is defined in Kim & Mnih, "
             "ICML 2018, §4.", "",
             "## Load", "", "```python", "from factorvae.export import load_exported",
             'run = load_exported(".")              # model in eval mode, its config and data set',
             "codes = run.model.representation(x)   # x: (B, C, 64, 64) in [0, 1]", "```", "",
             f"`{WEIGHTS}` holds the {' and '.join(info['networks'])} weights only (no optimiser or "
             "discriminator state); `config.json` the complete resolved config.", "",
             "## Data", "", f"`{d['name']}`" + (f" (channels: {d['channels']})" if d.get("channels") else "") + ".", "",
             "## Hyper-parameters", "", "| key | value |", "| --- | --- |"]
    for section in ("model", "optim", "train"):
        for key, value in _flatten(config[section]).items():
            lines.append(f"| `{section}.{key}` | `{json.dumps(value)}` |")
    lines += ["", "## Scores", ""]
    if scored:
        s = scores.get("settings", {})
        lines += [f"`factorvae eval` at preset `{s.get('preset')}`, seed {s.get('seed')}"
                  + (f", step {scores['run']['step']}" if "run" in scores else "") + ":", "",
                  "| metric | value |", "| --- | --- |"]
        for k in scored:
            h = RECORDS[k].headline
            v = scores[k].get(h)
            shown = f"{v:.4f}" if isinstance(v, float) else (not_scored(v, scores[k]) or v)
            lines.append(f"| {k}.{h} | {shown} |")
    else:
        lines.append("Not scored: run `factorvae eval RUN_DIR` before exporting.")
    lines += ["", "## Latent traversal", ""]
    lines.append(f"![traversal: one row per latent]({TRAVERSAL})" if has_traversal
                 else "No traversal image in the run (`factorvae traverse RUN_DIR` makes one).")
    return "\n".join(lines) + "\n"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _read_json(path: Path):
    return load_json(path) if path.exists() else None


__all__ = ["export_run", "load_exported", "is_export", "model_card"]
