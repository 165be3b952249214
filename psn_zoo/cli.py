"""The ``psn-zoo`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_neurons(args: argparse.Namespace) -> int:
    from .neurons import list_neurons, neuron_info

    rows = [neuron_info(name) for name in list_neurons(args.pattern)]
    if not rows:
        print(f"no neuron matches {args.pattern!r}")
        return 1
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        flags = ("causal" if r["causal"] else "parallel-only") + (", needs T" if r["needs_T"] else "")
        aliases = f" (alias: {', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"{r['name']:<{width}}  {r['class']}{aliases} [{flags}]")
        print(f"{'':<{width}}  kwargs: {', '.join(r['kwargs'])}")
        print(f"{'':<{width}}  {r['summary']}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}")
        return 1
    width = max(len(n) for n in names)
    for name in names:
        info = model_info(name)
        defaults = info["defaults"]
        tag = "paper" if info["paper"] else info["family"]
        print(f"{name:<{width}}  [{tag}] neuron={defaults['neuron']} T={defaults['T']}  {info['summary']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="psn-zoo", description="Parallel Spiking Neuron model zoo")
    parser.add_argument("--version", action="version", version=f"psn-zoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    neurons = sub.add_parser("neurons", help="list the registered neurons and their arguments")
    neurons.add_argument("pattern", nargs="?", default=None, help="fnmatch filter, e.g. '*psn*'")
    neurons.set_defaults(func=_cmd_neurons)
    models = sub.add_parser("models", help="list the registered models")
    models.add_argument("pattern", nargs="?", default=None, help="fnmatch filter, e.g. 'sew*'")
    models.set_defaults(func=_cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
