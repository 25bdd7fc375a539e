"""``python -m scripts verify [NAME ...] [--root DIR]``: check bundles offline against the bundle contract.

Checks, each failure reported as one line ``<file>: <problem>``:

- required files present (:data:`REQUIRED_FILES`), no shipped file over 25 MB, weights at most 10 MB;
- every ``configs/*.json`` is valid JSON (errors give line and column);
- ``configs/metadata.json`` against ``scripts/bundle_schema.json``: MONAI's official metadata schema
  (embedded verbatim) plus this project's stricter keys (``inputs.image``/``outputs.pred`` with
  ``modality``, ``is_patch_data``, ``channel_def`` with units; X.Y.Z ``changelog``; exact version pins);
- ``version`` is the newest ``changelog`` entry;
- the ids users override (:data:`OVERRIDE_IDS`) exist in ``configs/train.json``;
- ``models/model.pt`` loads with ``torch.load(weights_only=True)``, is a state_dict (a mapping of
  names to tensors) and loads strictly into ``network_def``;
- ``monai.bundle.verify_net_in_out`` (channels, dtype), plus the output spatial shape for a zero input
  of the metadata's ``spatial_shape`` (which MONAI does not check);
- a TorchScript export round-trip gives the same outputs.

The JSON schema is applied with ``jsonschema`` rather than ``monai.bundle.verify_metadata``: the latter
downloads the schema named in the metadata (or needs it pre-placed), stops at the first error and
cannot apply the project's stricter keys.

The helpers :func:`show`, :func:`load_json`, :func:`shipped_files` and :func:`read_metadata` are shared
with ``scripts.package`` and ``scripts.download``.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import torch
from monai.bundle import ConfigParser, verify_net_in_out
from monai.bundle.scripts import (
    _get_fake_spatial_shape,  # MONAI's own "16*n"-style shape rule
)
from monai.networks.utils import convert_to_torchscript
from monai.utils import get_equivalent_dtype

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"
SCHEMA_FILE = Path(__file__).with_name("bundle_schema.json")

REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
    "LICENSE",
    "models/model.pt",
)
OVERRIDE_IDS = (
    "bundle_root",
    "dataset_dir",
    "output_dir",
    "device",
    "network_def",
    "num_epochs",
    "learning_rate",
    "val_interval",
    "n_subjects",
    "data_seed",
)
MAX_FILE_BYTES = 25 * 1024**2
MAX_WEIGHTS_BYTES = 10 * 1024**2
# Run outputs and generated data: git-ignored, never shipped, not checked (DESIGN section 2).
EXCLUDED_PARTS = (("data",), ("eval",), ("runs",), ("dist",), ("models", "checkpoints"), ("models", "runs"))
EXCLUDED_NAMES = {"__pycache__"}


def show(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute (for messages)."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_json(path: str | Path) -> Any:
    """Read a JSON file; errors name the file (and line and column for invalid JSON).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not valid JSON.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{show(path)}: file not found") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{show(path)}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def _excluded(rel: Path, run_outputs: bool) -> bool:
    parts = rel.parts
    if any(p in EXCLUDED_NAMES or p.startswith(".") for p in parts) or rel.suffix == ".pyc":
        return True
    return run_outputs and any(len(parts) > len(ex) and parts[: len(ex)] == ex for ex in EXCLUDED_PARTS)


def shipped_files(folder: str | Path, skip_run_outputs: bool = True) -> list[Path]:
    """The files a bundle (or the vendored ``common``) ships, relative to ``folder`` and sorted: all but
    caches and hidden files and, with ``skip_run_outputs``, ``data/ eval/ runs/ dist/ models/checkpoints/ models/runs/``."""
    folder = Path(folder)
    rels = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return sorted((r for r in rels if not _excluded(r, skip_run_outputs)), key=lambda r: r.as_posix())


def version_key(version: str) -> tuple[int, ...]:
    """Sort key of an ``X.Y.Z`` version string.

    Raises:
        ValueError: ``version`` is not of that form.
    """
    parts = str(version).split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{version!r} is not a version of the form X.Y.Z")
    return tuple(int(p) for p in parts)


def read_metadata(bundle_dir: str | Path) -> dict:
    """``configs/metadata.json`` of a bundle, checked against the project schema.

    Raises:
        FileNotFoundError, ValueError: missing file, invalid JSON, schema errors (one line each).
    """
    meta_file = Path(bundle_dir) / "configs" / "metadata.json"
    meta = load_json(meta_file)
    errors = schema_errors(meta, meta_file)
    if errors:
        raise ValueError("\n".join(errors))
    return meta


def _leaf_errors(error: jsonschema.ValidationError) -> Iterable[jsonschema.ValidationError]:
    # "anyOf" (the official schema's argument type) only says "not valid under any of the given
    # schemas"; the branch that got deepest into the value names the key and the problem.
    if not error.context:
        yield error
        return
    depth = max(len(e.absolute_path) for e in error.context)
    if depth > len(error.absolute_path):
        for sub in error.context:
            if len(sub.absolute_path) == depth:
                yield from _leaf_errors(sub)
    else:
        yield from _leaf_errors(jsonschema.exceptions.best_match(error.context))


def schema_errors(meta: Any, meta_file: str | Path) -> list[str]:
    """One line per violation of ``scripts/bundle_schema.json``: ``<file>: <json.path>: <problem>``."""
    validator = jsonschema.Draft201909Validator(load_json(SCHEMA_FILE))
    lines: list[str] = []
    for error in sorted(validator.iter_errors(meta), key=lambda e: [str(p) for p in e.absolute_path]):
        for leaf in _leaf_errors(error):
            message = leaf.message
            if leaf.validator == "pattern" and "description" in leaf.schema:
                message = f"{leaf.instance!r} {leaf.schema['description']}"
            where = ".".join(str(p) for p in leaf.absolute_path)
            line = f"{show(meta_file)}: {where + ': ' if where else ''}{message}"
            if line not in lines:
                lines.append(line)
    return lines


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def check_files(bundle_dir: Path) -> list[str]:
    """Required files present; shipped files within the size limits."""
    failures = [f"{show(bundle_dir / rel)}: required file missing" for rel in REQUIRED_FILES if not (bundle_dir / rel).is_file()]
    for rel in shipped_files(bundle_dir):
        size = (bundle_dir / rel).stat().st_size
        limit = MAX_WEIGHTS_BYTES if rel.suffix in (".pt", ".ts", ".pth") else MAX_FILE_BYTES
        if size > limit:
            failures.append(f"{show(bundle_dir / rel)}: {size / 1024**2:.1f} MB is over the {limit // 1024**2} MB limit")
    return failures


def check_metadata(meta_file: Path) -> tuple[list[str], dict | None]:
    """Schema and changelog checks of ``metadata.json``; returns the failures and the metadata when usable."""
    try:
        meta = load_json(meta_file)
    except (FileNotFoundError, ValueError) as e:
        return [str(e)], None
    failures = schema_errors(meta, meta_file)
    if failures:
        return failures, None
    version, changelog = meta["version"], meta["changelog"]
    newest = max(changelog, key=version_key)
    if version not in changelog:
        failures.append(f"{show(meta_file)}: version: {version!r} has no changelog entry (changelog has {', '.join(changelog)})")
    elif version != newest:
        failures.append(f"{show(meta_file)}: version: {version!r} is not the newest changelog entry {newest!r}")
    return failures, meta


def check_configs(bundle_dir: Path) -> list[str]:
    """Every config is valid JSON; ``train.json`` keeps the ids users override."""
    failures = []
    for config in sorted((bundle_dir / "configs").glob("*.json")):
        try:
            content = load_json(config)
        except ValueError as e:
            failures.append(str(e))
            continue
        if not isinstance(content, dict):
            failures.append(f"{show(config)}: top level is a {type(content).__name__}, not an object")
        elif config.name == "train.json":
            missing = [i for i in OVERRIDE_IDS if i not in content]
            if missing:
                failures.append(f"{show(config)}: missing ids users override: {', '.join(missing)}")
    return failures


def load_weights(weights: Path) -> dict[str, torch.Tensor]:
    """Load ``models/model.pt`` as a state_dict with ``torch.load(weights_only=True)``.

    Raises:
        ValueError: it cannot be loaded that way or is not a mapping of names to tensors.
    """
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise ValueError(f"{show(weights)}: cannot be loaded with torch.load(weights_only=True): {_one_line(e)}") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        kind = type(state).__name__
        raise ValueError(f"{show(weights)}: is not a state_dict (a mapping of parameter names to tensors) but a {kind}")
    return dict(state)


def check_network(bundle_dir: Path, meta: dict, state: dict[str, torch.Tensor] | None) -> list[str]:
    """``network_def`` of ``inference.json``: weights (unless ``state`` is None), channels/dtype, spatial
    shape, TorchScript round-trip."""
    config = bundle_dir / "configs" / "inference.json"
    meta_file = bundle_dir / "configs" / "metadata.json"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Absolute bundle_root, as the bundle import idiom requires (NOTES.md).
    root = str(bundle_dir.resolve())
    where = f"{show(config)}: network_def"
    scripts_logger = logging.getLogger("monai.bundle.scripts")
    level = scripts_logger.level
    scripts_logger.setLevel(logging.WARNING)  # its input summary would bury the failure lines
    try:
        verify_net_in_out(net_id="network_def", meta_file=str(meta_file), config_file=str(config), device=str(device), bundle_root=root)
    except Exception as e:
        return [f"{where}: verify_net_in_out: {_one_line(e)}"]
    finally:
        scripts_logger.setLevel(level)

    parser = ConfigParser()
    parser.read_config(str(config))
    parser.read_meta(str(meta_file))
    parser["bundle_root"] = root
    net = parser.get_parsed_content("network_def").to(device).eval()
    try:
        if state is not None:
            net.load_state_dict(state)
    except RuntimeError as e:
        return [f"{show(bundle_dir / 'models/model.pt')}: does not load into network_def: {_one_line(e)}"]

    fmt = meta["network_data_format"]
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    in_shape = _get_fake_spatial_shape(image["spatial_shape"])
    out_shape = _get_fake_spatial_shape(pred["spatial_shape"])
    dtype = get_equivalent_dtype(image["dtype"], torch.Tensor)
    with torch.no_grad():
        out = net(torch.zeros((1, image["num_channels"], *in_shape), dtype=dtype, device=device))
    failures = []
    if tuple(out.shape[2:]) != tuple(out_shape):
        failures.append(
            f"{where}: output spatial shape {tuple(out.shape[2:])} for input spatial_shape {tuple(in_shape)}, "
            f"but {show(meta_file)} says outputs.pred.spatial_shape {tuple(out_shape)}"
        )
    # A seeded non-constant input: a zero input can hide differences behind biases.
    x = torch.rand((1, image["num_channels"], *in_shape), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript on every call; the export is still what the contract checks
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        try:
            convert_to_torchscript(net, f"{tmp}/model.ts", verify=True, inputs=[x], device=device, rtol=1e-4, atol=1e-5)
        except Exception as e:
            failures.append(f"{where}: TorchScript export round-trip failed: {_one_line(e)}")
    return failures


def verify_bundle(bundle_dir: str | Path) -> list[str]:
    """All checks of one bundle folder; returns one line per failure (empty when it passes)."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        return [f"{show(bundle_dir)}: not a directory"]
    failures = check_files(bundle_dir) + check_configs(bundle_dir)
    meta_failures, meta = check_metadata(bundle_dir / "configs" / "metadata.json")
    # invalid JSON in metadata.json is already reported by check_configs
    failures += [f for f in meta_failures if f not in failures]
    weights = bundle_dir / "models" / "model.pt"
    state = None
    if weights.is_file():
        try:
            state = load_weights(weights)
        except ValueError as e:
            failures.append(str(e))
    config = bundle_dir / "configs" / "inference.json"
    if meta is not None and config.is_file() and not any(show(config) in f for f in failures):
        saved_path = list(sys.path)  # the bundle import idiom inserts bundle_root
        try:
            failures += check_network(bundle_dir, meta, state)
        except Exception as e:
            failures.append(f"{show(config)}: {_one_line(e)}")
        finally:
            sys.path[:] = saved_path
    return failures


def verify(*names: str, root: str | None = None) -> None:
    """Verify the named bundles under ``root`` (default: the repository's ``bundles/``), or all of them.

    Prints one line per failure and a summary; exits with status 1 when anything fails.
    """
    root_dir = Path(root) if root is not None else BUNDLES_DIR
    if not root_dir.is_dir():
        sys.exit(f"verify: {show(root_dir)}: bundle root is not a directory")
    known = sorted(p.name for p in root_dir.iterdir() if (p / "configs").is_dir())
    if not names and not known:
        print(f"verify: no bundles under {show(root_dir)}; nothing to check")
        return
    failed = 0
    for name in map(str, names or known):
        failures = verify_bundle(root_dir / name) if name in known else [
            f"{show(root_dir / name)}: unknown bundle {name!r} (known: {', '.join(known) or 'none'})"
        ]
        for line in failures:
            print(line)
        print(f"{name}: {'FAILED (' + str(len(failures)) + ')' if failures else 'ok'}")
        failed += bool(failures)
    total = len(names or known)
    print(f"verify: {total - failed} of {total} bundles passed")
    if failed:
        sys.exit(1)
