"""`factorvae pretrained`: the pretrained models shipped with the package, with their scores.

Each name works wherever a run directory does: ``factorvae eval NAME``, ``factorvae traverse
NAME``, ``factorvae.load_run(NAME)`` (the weights' sha256 is checked on loading).
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("pretrained", help="list the pretrained models shipped with the package",
                       description="List the pretrained models (name, method, data, steps, scores). Use a name "
                                   "wherever a run directory goes: factorvae eval NAME, factorvae traverse NAME.")
    p.add_argument("--json", action="store_true", help="print the registry's index as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from factorvae import pretrained

    models = pretrained.index()
    if args.json:
        print(json.dumps(models, indent=1))
        return 0
    if not models:
        print("No pretrained models are shipped yet: the full-budget models (3e5 steps) need a GPU run that "
              "has not been done.\nTrain your own: `make demo`, or `factorvae train --out RUN_DIR` "
              "(docs/reproduce.md).")
        return 0
    for name, e in models.items():
        scores = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in (e.get("scores") or {}).items()) or "not scored"
        steps = f"{e['steps']:,} steps" if isinstance(e.get("steps"), int) else "steps ?"
        print(f"{name}: {e.get('model', '?')} on {e.get('data', '?')}, {steps}; {scores}")
        if e.get("description"):
            print(f"    {e['description']}")
    return 0
