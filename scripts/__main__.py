"""Command line of the repository: ``python -m scripts <command> [args]`` (fire).

Each command lives in ``scripts/<command>.py`` as a function of the same name. Only the
chosen command's module is imported, so ``verify`` does not pay for the simulation stack,
and ``python -m scripts <command> --help`` shows that function's real signature.
"""

from __future__ import annotations

import importlib
import sys

import fire

COMMANDS = {
    "main": "evaluate every bundle on fresh held-out phantoms, demo training, results table",
    "verify": "check bundles offline against the bundle contract",
    "package": "write dist/<name>_v<version>.zip and record it in model_zoo.json",
    "download": "fetch a packaged bundle listed in model_zoo.json, checking its sha256",
    "make_dataset": "simulate a task's dataset (NIfTI + datalist.json)",
    "preview": "PNG montage of one simulated subject",
    "benchmark": "speed/accuracy benchmarks; writes results/benchmark.json",
}


def cli(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
        msg = "usage: python -m scripts <command> [--help]\n\ncommands:\n" + "\n".join(lines)
        if argv and argv[0] not in ("-h", "--help", "help"):
            sys.exit(f"unknown command {argv[0]!r}\n{msg}")
        print(msg)
        return
    name = argv[0]
    fn = getattr(importlib.import_module(f"scripts.{name}"), name)
    fire.Fire(fn, command=argv[1:], name=f"python -m scripts {name}")


if __name__ == "__main__":
    cli()
