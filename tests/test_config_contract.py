"""The config contract of DESIGN 4, checked on every bundle: the same ids for the same things,
the same section layout, ``evaluate.json`` a pure override, and no logic in long ``$`` strings
(logic lives in named, tested functions: :mod:`common.learning.workflow` or the bundle's package)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BUNDLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
#: A ``$`` expression longer than this is logic that belongs in Python.
MAX_EXPRESSION_CHARS = 120
TRAIN_IDS = ("bundle_root", "dataset_dir", "output_dir", "device", "network_def", "num_epochs", "learning_rate", "val_interval",
             "n_subjects", "data_seed", "resume", "pretrained", "model_path", "checkpoint_dir")  # fmt: skip
INFERENCE_IDS = ("bundle_root", "input_image", "output_dir", "model_path", "device", "network_def", "preprocessing", "postprocessing")


def _configs(bundle: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((bundle / "configs").glob("*.json")) if p.name != "metadata.json"}


def _expressions(node, where=""):
    if isinstance(node, str) and node.startswith("$"):
        yield where, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _expressions(v, f"{where}#{k}" if where else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _expressions(v, f"{where}#{i}")


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_no_dollar_expression_is_longer_than_one_short_line(bundle):
    long = [f"{name}:{where} ({len(expr)} chars)" for name, cfg in _configs(bundle).items() for where, expr in _expressions(cfg)
            if len(expr) > MAX_EXPRESSION_CHARS]  # fmt: skip
    assert not long, f"move this logic into a named function: {long}"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_every_bundle_names_the_same_things_with_the_same_ids(bundle):
    cfg = _configs(bundle)
    assert not [k for k in TRAIN_IDS if k not in cfg["train.json"]], "train.json lacks contract ids"
    assert not [k for k in INFERENCE_IDS if k not in cfg["inference.json"]], "inference.json lacks contract ids"
    assert cfg["train.json"]["resume"] is False  # a bool, read through common.learning.workflow.as_bool
    for name in ("train.json", "evaluate.json", "inference.json"):
        assert "ckpt_dir" not in cfg[name] and "weights_file" not in cfg[name]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_every_bundle_has_the_same_section_layout(bundle):
    cfg = _configs(bundle)
    train, evaluate, infer = cfg["train.json"], cfg["evaluate.json"], cfg["inference.json"]
    for section in ("train", "validate"):
        assert {"preprocessing", "datalist", "dataset", "dataloader", "inferer", "handlers"} <= set(train[section]), section
    assert {"trainer", "checkpoint_saver"} <= set(train["train"]) and "evaluator" in train["validate"]
    for c, workflow in ((train, "training"), (evaluate, "evaluating"), (infer, "inference")):
        assert isinstance(c.get("run"), list) and c.get(workflow) == "@run", workflow
    assert "initialize" in train and "initialize" in infer


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_evaluate_json_is_a_pure_override_of_train_json(bundle):
    cfg = _configs(bundle)
    evaluate, train = cfg["evaluate.json"], cfg["train.json"]
    assert "imports" not in evaluate and "bundle_root" not in evaluate and "network_def" not in evaluate
    # every id it references exists in train.json or in evaluate.json itself
    refs = {r for _, e in _expressions(evaluate) for r in _refs(e)}
    known = set(train) | {k.split("#")[0] for k in evaluate}
    assert not sorted(r for r in refs if r.split("#")[0] not in known)


def _refs(expr: str) -> list[str]:
    import re

    return re.findall(r"@([A-Za-z_][\w#]*)", expr)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_multi_gpu_override_is_the_same_file_in_every_bundle(bundle):
    assert (bundle / "configs" / "multi_gpu_train.json").read_text() == (BUNDLES[0] / "configs" / "multi_gpu_train.json").read_text()
