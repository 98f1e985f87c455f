"""`factorvae` command line: train | eval | metrics | traverse | data | sweep | report."""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import signal
import sys

from factorvae.errors import UserError, out_of_memory
from factorvae.io import describe_os_error
from factorvae.commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factorvae",
        description="Train and measure disentangled representations (FactorVAE, Kim & Mnih 2018).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"factorvae.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"factorvae.commands.{name}":
                raise
            continue  # a command not built yet
        module.register(sub)
    return parser


#: "unknown model 'factorvea'; choose one of a, b, c": every unknown-choice message (models, data
#: sets, presets, metrics, loggers) names the value in quotes and then the choices
_UNKNOWN = re.compile(r"^(?P<head>unknown [^']*?'(?P<value>[^']+)')(?P<rest>; choose (?:one of|from) (?P<choices>[\w, -]+))")


def suggest(message: str) -> str:
    """``message`` with "(did you mean 'x'?)" after an unknown choice that is close to a valid one."""
    m = _UNKNOWN.match(message)
    if not m or "did you mean" in message:
        return message
    choices = [c.strip() for c in m["choices"].split(",") if c.strip()]
    close = difflib.get_close_matches(m["value"], choices, n=1, cutoff=0.6)
    if not close:
        return message
    return f"{m['head']} (did you mean '{close[0]}'?){message[m.end('head'):]}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code = _run(args)
    if argv is None and code >= 128:  # this process ends on a signal: another must not break its exit
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    return code


def _run(args) -> int:
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"factorvae {args.command}: error: {suggest(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # full disk, read-only or unwritable path: the environment, not a bug
        # an error without a file name (a short write) names the output the user gave
        where = e.filename or next((getattr(args, k) for k in ("out", "dir", "run_dir") if getattr(args, k, None)), None)
        print(f"factorvae {args.command}: error: {describe_os_error(e, where)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # sizes asked for (metric settings, a data file) beyond memory
        if not out_of_memory(e):
            raise
        detail = " ".join(str(e).split())[:160]
        print(f"factorvae {args.command}: error: out of memory ({detail}); ask for smaller sizes", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"factorvae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
