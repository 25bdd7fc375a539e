"""Which bundles the app serves, decided from each bundle's own files.

Plain json/pathlib only, so ``python -m scripts label_server`` and the tests use the same rule
without importing MONAI Label. A bundle is served when it is image in, image out, as NIfTI:

- ``configs/inference.json``, ``configs/metadata.json`` and ``models/model.pt`` (or ``model.ts``);
- ``network_data_format`` has the input ``image`` and the output ``pred``, both of type ``image``;
- its ``preprocessing`` loads ``image`` with ``LoadImaged`` or with the bundle's own dictionary
  loader (a ``Load...d`` transform, e.g. ``LoadProjectionsd``, which reads a NIfTI plus its JSON
  sidecar); one loader, ``image`` its first key. Each further key it loads (``ct`` of
  ``dose_rate_prediction``) needs the config id ``input_<key>`` (the one-study command line's
  ``--input_ct``): the request names that image in the parameter ``input_<key>``
  (:func:`extra_images`);
- its ``postprocessing`` writes ``pred`` as NIfTI: with ``SaveImaged``, or with the bundle's own
  saver (a ``Save...d`` transform, e.g. ``SaveProjectionsd``) whose ``output_dir`` is the config's
  ``@output_dir``: the app points that id at a folder of its own and answers with the NIfTI (and
  the JSON sidecar) the saver writes there (:func:`own_saver`, ``lib/infer.py``).

Per-study facts (e.g. the dose reduction factor) come from the config's ``study_facts``
(``{item key: "@cli_id"}``, DESIGN 4): each ``cli_id`` becomes a request parameter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

INPUT_KEY = "image"
OUTPUT_KEY = "pred"
WEIGHTS = ("model.pt", "model.ts")
NIFTI_EXTS = (".nii.gz", ".nii")
#: MONAI's naming of dictionary transforms: a bundle's own loader or saver is ``Load...d`` / ``Save...d``
_LOADER = re.compile(r"Load\w*d")
_SAVER = re.compile(r"Save\w*d")
OUTPUT_DIR_REF = "@output_dir"


def _target(transform: Any) -> str:
    return str(transform.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(transform, dict) else ""


def _keys(transform: dict) -> list[str]:
    keys = transform.get("keys", [])
    return [keys] if isinstance(keys, str) else list(keys)


def _transforms(section: Any) -> list[Any]:
    if isinstance(section, dict):
        return list(section.get("transforms", []))
    return list(section) if isinstance(section, list) else []


def _loaders(inference_config: dict) -> list[dict]:
    """The preprocessing transforms that load images: ``LoadImaged`` or a bundle's own ``Load...d``."""
    return [t for t in _transforms(inference_config.get("preprocessing")) if _LOADER.fullmatch(_target(t))]


def unservable_reason(bundle: str | Path) -> str | None:
    """Why the app cannot serve ``bundle`` (one line), or None when it can."""
    bundle = Path(bundle)
    configs = bundle / "configs"
    for name in ("inference.json", "metadata.json"):
        if not (configs / name).is_file():
            return f"no configs/{name}"
    if not any((bundle / "models" / w).is_file() for w in WEIGHTS):
        return "no trained weights (models/model.pt)"
    try:
        meta = json.loads((configs / "metadata.json").read_text())
        infer = json.loads((configs / "inference.json").read_text())
    except (OSError, ValueError) as e:
        return f"unreadable config: {e}"
    fmt = meta.get("network_data_format", {})
    inp, out = fmt.get("inputs", {}).get(INPUT_KEY), fmt.get("outputs", {}).get(OUTPUT_KEY)
    if not isinstance(inp, dict) or not isinstance(out, dict):
        return f"network_data_format has no input {INPUT_KEY!r} or no output {OUTPUT_KEY!r}"
    if inp.get("type") != "image" or out.get("type") != "image":
        return f"not image in, image out (input type {inp.get('type')!r}, output type {out.get('type')!r})"
    loads = _loaders(infer)
    if len(loads) != 1 or _keys(loads[0])[:1] != [INPUT_KEY]:
        found = {_target(t): _keys(t) for t in loads}
        return f"preprocessing does not load {INPUT_KEY!r} first with exactly one loader (loaders and their keys: {found})"
    unnamed = [k for k in _keys(loads[0])[1:] if f"input_{k}" not in infer]
    if unnamed:
        return f"preprocessing loads {unnamed} but the config has no {['input_' + k for k in unnamed]} to name them"
    saves = _savers(infer)
    if not saves:
        return f"postprocessing does not write {OUTPUT_KEY!r} with SaveImaged or a Save...d transform of its own"
    ext = saves[0].get("output_ext", ".nii.gz")
    if ext not in NIFTI_EXTS:
        return f"output is written as {ext!r}, not NIfTI"
    if _target(saves[0]) != "SaveImaged":
        if saves[0].get("output_dir") != OUTPUT_DIR_REF:
            return f"its own saver {_target(saves[0])} does not write to {OUTPUT_DIR_REF} (output_dir: {saves[0].get('output_dir')!r})"
        if "output_dir" not in infer or "input_image" not in infer:
            return "its own saver needs the config ids output_dir and input_image (the one-study command line)"
    return None


def _savers(inference_config: dict) -> list[dict]:
    """The postprocessing transforms that write ``pred``: ``SaveImaged`` first, then ``Save...d``."""
    saves = [
        t for t in _transforms(inference_config.get("postprocessing")) if _SAVER.fullmatch(_target(t)) and OUTPUT_KEY in _keys(t)
    ]
    return sorted(saves, key=lambda t: _target(t) != "SaveImaged")


def own_saver(inference_config: dict) -> str | None:
    """The class name of the bundle's own saver of ``pred`` (e.g. ``SaveProjectionsd``), or None
    when ``SaveImaged`` writes it (MONAI Label then drops it and the app writes the answer)."""
    saves = _savers(inference_config)
    return _target(saves[0]) if saves and _target(saves[0]) != "SaveImaged" else None


def extra_images(inference_config: dict) -> dict[str, str]:
    """``{request parameter: item key}`` of the images a bundle loads besides ``image``: its loader's
    ``"keys": ["image", "ct"]`` gives ``{"input_ct": "ct"}`` (the config id of ``--input_ct``)."""
    return {f"input_{k}": k for t in _loaders(inference_config) for k in _keys(t) if k != INPUT_KEY}


def find_bundles(root: str | Path) -> tuple[dict[str, Path], dict[str, str]]:
    """``({name: path} servable, {name: reason} skipped)`` for the folders under ``root``
    (symbolic links followed) that hold a ``configs/`` folder."""
    served: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    root = Path(root)
    for path in sorted(p for p in root.iterdir() if (p / "configs").is_dir()) if root.is_dir() else []:
        reason = unservable_reason(path)
        if reason is None:
            served[path.name] = path
        else:
            skipped[path.name] = reason
    return served, skipped


def study_facts(inference_config: dict) -> dict[str, str]:
    """``{request parameter: item key}`` of a bundle's per-study facts: ``"study_facts": {"drf":
    "@dose_reduction_factor"}`` gives ``{"dose_reduction_factor": "drf"}`` (the parameter has the
    command-line id's name); a fact whose value is not an ``@`` reference keeps its own name."""
    facts = inference_config.get("study_facts")
    if not isinstance(facts, dict):
        return {}
    out = {}
    for key, value in facts.items():
        ref = value[1:] if isinstance(value, str) and value.startswith("@") and value[1:].isidentifier() else None
        out[ref or key] = key
    return out
