"""CLI sub-commands. Each module has ``register(subparsers)``; the parser it adds sets
``func=run`` where ``run(args) -> int`` returns the exit status."""

COMMANDS = ["train", "eval", "metrics", "traverse", "data", "sweep", "report", "encode", "export", "pretrained", "udr"]
