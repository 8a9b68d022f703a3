"""`inspector serve | score | verify | schemas`: the serving side's commands.

The camera simulator, the verdict tail, the local services and the demo are dev tools
(``python -m devtools``): they are not part of the serving package or its image.
"""

from __future__ import annotations

import argparse
import sys

from inspector import score, serve, verify
from inspector.contracts import wire
from inspector.support.logs import configure_logging

COMMANDS = (serve, score, wire, verify)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inspector", description="Production-line visual inspection service.")
    p.add_argument("--log-level", default="info")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":  # the worker configures JSON logging from its settings
        configure_logging(args.log_level)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
