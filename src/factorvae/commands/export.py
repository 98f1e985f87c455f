"""`factorvae export RUN_DIR --out DIR`: a run as a Hugging Face-style model folder.

Writes model.safetensors (encoder and decoder weights), config.json (the resolved config)
and a model card README.md (with the run's scores from eval.json and a traversal image);
``factorvae.export.load_exported(DIR)`` loads it back. An existing folder is only
overwritten if an earlier export wrote it.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("export", help="write a run's weights, config and model card to a folder",
                       description="Export a run's last checkpoint as model.safetensors (encoder + decoder), "
                                   "config.json and a model card README.md, in the layout of a Hugging Face "
                                   "model repository.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (new, empty, or an earlier export)")
    p.set_defaults(func=run)


def run(args) -> int:
    from factorvae.export import export_run

    written = export_run(args.run_dir, args.out)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0
