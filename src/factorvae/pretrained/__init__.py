"""Pretrained models shipped with the package: ``index.json`` names them, one folder each in
the export layout (``factorvae export``): ``model.safetensors`` (encoder and decoder
weights), ``config.json`` and ``README.md`` (model card with the scores and the weights'
sha256). ``factorvae pretrained`` lists them; ``load_run(NAME)``, ``factorvae eval NAME`` and
``factorvae traverse NAME`` load one after checking its weights against the recorded sha256.

index.json::

    {"format": 1, "models": {"NAME": {"folder": "NAME", "sha256": "...", "model": "factorvae",
     "data": "dsprites", "steps": 300000, "scores": {"factor_vae.eval_accuracy": 0.82, ...},
     "description": "..."}}}

This module reads JSON and hashes files only (no torch): ``factorvae.runs`` imports it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from factorvae.errors import UserError
from factorvae.io import atomic_write_json, atomic_write_text, confined, load_json

#: where index.json and the model folders are (tests point it at a temporary registry)
REGISTRY = Path(__file__).parent
INDEX = "index.json"
WEIGHTS = "model.safetensors"


def index() -> dict[str, dict]:
    """{name: entry} of the shipped models (empty when none are shipped)."""
    path = REGISTRY / INDEX
    if not path.exists():
        return {}
    try:
        raw = load_json(path, "pretrained registry")
    except UserError as e:
        raise UserError(f"pretrained registry {e}") from None
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, dict):
        raise UserError(f"pretrained registry {path}: no 'models' mapping")
    return models


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def locate(name_or_path):
    """``name_or_path`` unchanged unless it names a pretrained model (and is not an existing
    path): then that model's folder, after checking its weights' sha256 against the index."""
    if not isinstance(name_or_path, str) or Path(name_or_path).exists():
        return name_or_path
    models = index()
    if name_or_path not in models:
        return name_or_path
    entry = models[name_or_path]
    if not isinstance(entry, dict):
        raise UserError(f"pretrained registry {REGISTRY / INDEX}: entry {name_or_path!r} is not a mapping")
    folder = confined(REGISTRY, entry.get("folder", name_or_path), f"pretrained registry {REGISTRY / INDEX}")
    weights = folder / WEIGHTS
    try:
        digest = sha256(weights)
    except OSError as e:
        raise UserError(f"pretrained model {name_or_path!r}: {weights} unreadable ({e.strerror or e})") from None
    if digest != entry.get("sha256"):
        raise UserError(f"pretrained model {name_or_path!r}: {weights} has sha256 {digest[:12]}..., the index "
                        f"records {str(entry.get('sha256'))[:12]}...; the file is damaged or not the shipped one")
    return folder


def register(export_dir, name: str, scores: dict | None = None, description: str = "") -> dict:
    """Add an export folder (``factorvae export``) to the registry at ``REGISTRY`` under ``name``:
    copies it to REGISTRY/name, records the weights' sha256 and ``scores``, appends the sha256
    to the model card. For maintainers shipping models; returns the index entry."""
    src = Path(export_dir)
    cfg = load_json(src / "config.json", "export config")
    dst = confined(REGISTRY, name, "pretrained model name")
    if dst.exists():
        raise UserError(f"pretrained model {name!r} already in {REGISTRY}")
    shutil.copytree(src, dst)
    digest = sha256(dst / WEIGHTS)
    card = dst / "README.md"
    text = card.read_text() if card.exists() else f"# {name}\n"
    atomic_write_text(card, text + f"\n## Weights\n\n`{WEIGHTS}` sha256: `{digest}`\n")
    entry = {"folder": name, "sha256": digest, "model": cfg["model"]["name"], "data": cfg["data"]["name"],
             "steps": cfg.get("export", {}).get("step"), "scores": scores or {}, "description": description}
    models = index()
    models[name] = entry
    atomic_write_json(REGISTRY / INDEX, {"format": 1, "models": models})
    return entry
