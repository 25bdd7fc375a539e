"""Command line of the repository: ``python -m scripts <command> [args]`` (fire).

Each command lives in ``scripts/<command>.py`` as a function of the same name. Only the
chosen command's module is imported, so ``verify`` does not pay for the simulation stack,
and ``python -m scripts <command> --help`` shows that function's real signature.
"""

from __future__ import annotations

import importlib
import inspect
import sys

import fire

COMMANDS = {
    "main": "evaluate every bundle on fresh held-out phantoms, demo training, results table",
    "verify": "check bundles offline against the bundle contract",
    "package": "write dist/<name>_v<version>.zip and record it in model_zoo.json",
    "download": "fetch a packaged bundle listed in model_zoo.json, checking its sha256",
    "make_dataset": "simulate a task's dataset (NIfTI + datalist.json)",
    "preview": "PNG montage of one simulated subject",
    "benchmark": "quality on fresh held-out phantoms and speed against baselines: all, physics, bundles, speed, quick",
    "label_server": "serve the bundles with MONAI Label on 127.0.0.1 (synthetic held-out studies)",
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
    unknown = unknown_flags(fn, argv[1:])
    if unknown:
        # fire would run the command first and complain about the leftovers afterwards: a misspelt
        # flag must not start a long job with its default in place of what was asked
        known = ", ".join(f"--{p}" for p in inspect.signature(fn).parameters)
        sys.exit(f"python -m scripts {name}: unknown flag(s) {', '.join(unknown)}; known: {known}")
    try:
        fire.Fire(fn, command=argv[1:], name=f"python -m scripts {name}")
    except Exception as exc:  # a user's mistake reads as one line, as in the bundles
        from common.errors import user_error_line

        line = user_error_line(exc)
        if line is None:
            raise
        sys.exit(line)


def unknown_flags(fn, args: list[str]) -> list[str]:
    """The ``--flags`` in ``args`` that are not parameters of ``fn`` (fire accepts - for _)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    names = set(params) | {f"no{p}" for p in params}  # fire's --noflag for booleans
    args = args[: args.index("--")] if "--" in args else args  # after "--": fire's own flags
    flags = [a for a in args if a.startswith("--") and a != "--help"]
    return [f for f in flags if f[2:].split("=", 1)[0].replace("-", "_") not in names]


if __name__ == "__main__":
    cli()
