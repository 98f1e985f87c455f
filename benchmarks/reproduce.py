"""`make reproduce`: a sweep spec on this machine's GPU with the path and precision the GPU check
chose, optionally shrunk to a device-time budget, then its report.

    python3 -u benchmarks/reproduce.py --spec SPEC --out DIR [--check OUTDIR/gpu_check.tar.gz | check.json]
                                       [--minutes M] [-- extra `factorvae sweep` arguments]

- ``--check``: benchmarks/gpu_check.sh's tarball (or its check.json): ``train.group_strategy``,
  ``train.precision`` and ``train.eval_async`` come from its choice (without one: the spec's, i.e. ``auto`` and fp32).
- ``--minutes M``: ``train.steps`` becomes the largest multiple of 1,000 (at most the spec's) whose
  projected device time (benchmarks/gpu_projection.py: group steps, periodic work, final
  evaluation) fits M minutes; printed before training starts. Needs ``--check``.
- Each method's runs train as one vectorised group, all groups at once (``--workers`` = groups).
Then ``factorvae report DIR``. Needs only an importable torch: run with ``PYTHONPATH=src``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from gpu_projection import project, spec_groups, steps_within  # benchmarks/, beside this script


def fail(message: str):
    """Bad input: one line, exit 2."""
    print(f"reproduce: {message}", file=sys.stderr)
    sys.exit(2)


def read_check(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        fail(f"no GPU check at {path} (run: bash benchmarks/gpu_check.sh OUTDIR)")
    try:
        if p.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(p) as tar:
                member = next(m for m in tar.getmembers() if Path(m.name).name == "check.json")
                return json.load(tar.extractfile(member))
        return json.loads(p.read_text())
    except (StopIteration, OSError, tarfile.TarError, json.JSONDecodeError) as e:
        fail(f"{path} holds no readable check.json ({e.__class__.__name__})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="configs/sweeps/paper_core_2dshapes.yaml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", help="gpu_check.sh's OUTDIR/gpu_check.tar.gz or a check.json")
    ap.add_argument("--minutes", type=float, help="device-time budget: the largest step count that fits")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("rest", nargs="*", help="after --: more `factorvae sweep` arguments")
    args = ap.parse_args()
    _, runs = spec_groups(args.spec)
    sets = []
    check = read_check(args.check) if args.check else None
    choice = (check or {}).get("choice")
    if check and choice:
        sets += [f"train.group_strategy={choice['group_strategy']}", f"train.precision={choice['precision']}"]
        if "eval_async" in choice:  # the periodic evaluation that blocks training less, as measured
            sets.append(f"train.eval_async={str(choice['eval_async']).lower()}")
        print(f"reproduce: from the GPU check on {check.get('device')}: path {choice['group_strategy']}, "
              f"precision {choice['precision']}", flush=True)
    elif check:
        print("reproduce: the GPU check made no choice (no group rate measured); the spec's settings", flush=True)
    if args.minutes is not None:
        steps = steps_within(check, args.spec, args.minutes) if choice else None
        if steps is None:
            fail("--minutes needs a GPU check with rates for this spec's groups (--check)")
        if steps == 0:
            fail(f"not even 1,000 steps fit {args.minutes:g} minutes by the check's projection")
        p = project(check, args.spec, steps)
        print(f"reproduce: budget {args.minutes:g} min -> train.steps = {steps:,} per run "
              f"(projected {p['seconds'] / 60:.1f} min of device time; the spec's full budget: "
              f"{project(check, args.spec)['seconds'] / 60:.1f} min)", flush=True)
        sets.append(f"train.steps={steps}")
    elif choice and (p := project(check, args.spec)):
        print(f"reproduce: projected {p['seconds'] / 60:.1f} min of device time", flush=True)
    sweep = [sys.executable, "-m", "factorvae", "sweep", args.spec, "--out", args.out, "--workers", str(len(runs)),
             "--group-size", str(max(runs.values())), "--no-progress"]
    for s in sets:
        sweep += ["--set", s]
    commands = [sweep + args.rest, [sys.executable, "-m", "factorvae", "report", args.out]]
    for cmd in commands:
        print("reproduce: " + " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), flush=True)
        if not args.dry_run and subprocess.call(cmd) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
