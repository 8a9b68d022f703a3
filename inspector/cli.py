"""`inspector serve | score | publish | tail | schemas | verify`."""

from __future__ import annotations

import argparse
import sys

from . import camera, score, serve, tail, verify, wire
from .logging_setup import configure_logging

COMMANDS = (serve, score, camera, tail, wire, verify)


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
