"""Create or update the repository's virtual environment (stdlib only).

Run with any Python 3.10+ (``python3 scripts/bootstrap.py``). It

1. creates ``.venv/`` at the repository root when it is missing (``NM_VENV_SYSTEM_SITE=1``
   adds ``--system-site-packages`` so a system torch, e.g. a CUDA build, is reused);
2. installs ``torch==TORCH_PIN`` only when ``import torch`` fails inside the venv, so pip
   takes the small CPU wheel and never replaces a torch the user already has;
3. pins the installed torch version in ``.venv/torch-constraint.txt`` and installs the
   project (editable, with the ``test``, ``bench`` and ``label`` extras) under that constraint;
4. with the ``label`` extra, adds MONAI Label itself with ``--no-deps`` (:data:`LABEL_NO_DEPS`).

A stamp of pyproject.toml's hash makes a re-run on a ready venv a no-op (about 1 s).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

TORCH_PIN = "2.13.0"
ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
#: Installed with ``--no-deps`` after the ``label`` extra, which holds their runtime requirements.
#: monailabel 0.8.5 requires sam2 (an sdist whose isolated build installs the 5.5 GB CUDA torch)
#: and numpymaxflow (numpy<2), used only by its SAM2 and scribbles tools, which this repository's
#: app does not load; pydicom-seg 0.4.1 pins numpy<2 and jsonschema<4 though it runs with both
#: (MONAI Label's server imports it; with pydicom 3, which pytomography 3.4 needs, it imports
#: only through the alias that ``python -m scripts.label_app`` sets: scripts/label_app/lib/compat.py).
LABEL_NO_DEPS = ("monailabel==0.8.5", "pydicom-seg==0.4.1")


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _venv_has(module: str) -> str | None:
    """Version of ``module`` importable in the venv, or None."""
    out = subprocess.run(
        [str(PY), "-c", f"import importlib.metadata as m, {module}; print(m.version('{module}'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def main(extras: str = "test,bench,label") -> None:
    t0 = time.time()
    if not PY.exists():
        args = [sys.executable, "-m", "venv", str(VENV)]
        if os.environ.get("NM_VENV_SYSTEM_SITE") == "1":
            args.append("--system-site-packages")
        _run(args)
    stamp = VENV / ".bootstrap-stamp"
    no_deps = LABEL_NO_DEPS if "label" in extras.split(",") else ()
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode() + repr(no_deps).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == want and _venv_has("torch"):
        print(f"bootstrap: {VENV} is up to date")
        return
    torch_version = _venv_has("torch")
    if torch_version is None:
        _run([str(PY), "-m", "pip", "install", "--quiet", f"torch=={TORCH_PIN}"])
        torch_version = _venv_has("torch")
        if torch_version is None:
            sys.exit("bootstrap: torch did not import after installing it; see pip's output above")
    constraint = VENV / "torch-constraint.txt"
    constraint.write_text(f"torch=={torch_version}\n")
    _run([str(PY), "-m", "pip", "install", "--quiet", "-c", str(constraint), "-e", f"{ROOT}[{extras}]"])
    if no_deps:
        _run([str(PY), "-m", "pip", "install", "--quiet", "--no-deps", "-c", str(constraint), *no_deps])
    stamp.write_text(want)
    print(f"bootstrap: {VENV} ready (torch {torch_version}) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
