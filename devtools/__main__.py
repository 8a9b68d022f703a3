"""`python -m devtools publish | tail | services | demo`."""

from __future__ import annotations

import argparse
import sys

from devtools import camera, tail
from inspector.support.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devtools",
                                description="Dev tools: a simulated camera, a verdict tail, local services, the demo.")
    p.add_argument("--log-level", default="info")
    sub = p.add_subparsers(dest="command", required=True)
    camera.register(sub)
    tail.register(sub)
    sub.add_parser("services", help="local Apache Kafka + Redis (start|stop|restart|status|env)", add_help=False)
    sub.add_parser("demo", help="the whole product end to end on this machine (make demo)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("services", "demo"):  # they own their arguments
        if argv[0] == "services":
            from devtools.services import main as run
        else:
            from devtools.demo import main as run
        return int(run(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
