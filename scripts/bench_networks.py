"""Benchmark suite ``networks``: every bundle's network on one study size, and its training step.

- Inference: the network of ``inference.json`` with the shipped weights and the bundle's own
  inferer (sliding window where it has one) on a 128 x 128 x 96 study (issue 17; SPECT: the 120
  projections of such a study, 128 x 96 bins), median of 3 after a warm-up (``quick``: 1).
- Training throughput: one optimiser step (forward, the bundle's loss, backward, step) of the
  ``train.json`` network, loss and optimiser on a batch shaped like its training batches
  (``samples_per_volume`` x ``batch_size`` patches of ``patch_size``), median of 20 steps after 3
  warm-up steps (``quick``: 3 after 1), in steps/s and loss voxels/s.

Random inputs: the times do not depend on the values (no data-dependent branches in these
networks). Every timing is printed with the torch thread count and the 1-minute load average.
CUDA is timed as well when present.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from scripts.benchmark import median_seconds
from scripts.main import ROOT, bundle_names

STUDY_SHAPE = (128, 128, 96)
#: ``--only`` merges this suite's results per device and bundle
MERGE_DEPTH = 2
#: A bundle whose network does not take the image volume: the spatial shape of its input.
NETWORK_INPUT_SHAPE = {"spect_projection_completion": (128, 96, 120)}


def _parser(bundle: Path, config: str, device: torch.device):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = f"$torch.device('{device}')"
    return parser


def _channels(meta: dict[str, Any]) -> tuple[int, int]:
    fmt = meta["network_data_format"]
    return int(fmt["inputs"]["image"]["num_channels"]), int(fmt["outputs"]["pred"]["num_channels"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference_seconds(name: str, device: torch.device, repeats: int) -> dict[str, Any]:
    bundle = ROOT / "bundles" / name
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    parser = _parser(bundle, "inference.json", device)
    net = parser.get_parsed_content("network_def").to(device).eval()
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location=device, weights_only=True))
    inferer = parser.get_parsed_content("inferer") if "inferer" in parser else None
    c_in, _ = _channels(meta)
    shape = NETWORK_INPUT_SHAPE.get(name, STUDY_SHAPE)
    x = torch.rand((1, c_in, *shape), generator=torch.Generator().manual_seed(0)).to(device)

    def once() -> None:
        with torch.no_grad():
            inferer(x, net) if inferer is not None else net(x)
        _sync(device)

    return {"input_shape": list(shape), "seconds": round(median_seconds(once, repeats), 3)}


def _training_crop(parser, meta: dict[str, Any]) -> tuple[list[int], int]:
    """(spatial size, samples per volume) of the training batches: the random crop of
    ``train#random_transforms`` (-1: the whole extent of the network's input), else the whole input."""
    whole = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]  # may be symbolic ("16*n")
    for i, t in enumerate(parser.get("train#random_transforms") or []):
        if isinstance(t, dict) and str(t.get("_target_", "")).endswith("RandSpatialCropSamplesd"):
            roi = parser.get_parsed_content(f"train#random_transforms#{i}#roi_size")
            n = int(parser.get_parsed_content(f"train#random_transforms#{i}#num_samples"))
            return [int(w) if int(r) < 0 else int(r) for r, w in zip(roi, whole)], n
    return [int(w) for w in whole], 1


def training_step_seconds(name: str, device: torch.device, steps: int, warmup: int) -> dict[str, Any]:
    bundle = ROOT / "bundles" / name
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    parser = _parser(bundle, "train.json", device)
    net = parser.get_parsed_content("network").train()
    loss_fn = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    c_in, c_out = _channels(meta)
    patch, per_volume = _training_crop(parser, meta)
    batch = per_volume * int(parser.get_parsed_content("train#dataloader#batch_size"))
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, c_in, *patch), generator=g).to(device)
    y = torch.rand((batch, c_out, *patch), generator=g).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        optimizer.step()
        _sync(device)

    s = median_seconds(step, steps, warmup)
    voxels = batch * int(torch.tensor(patch).prod())
    return {"batch": [batch, c_in, *patch], "seconds_per_step": round(s, 4), "steps_per_s": round(1 / s, 2),
            "mvoxels_per_s": round(voxels / s / 1e6, 3), "steps": steps, "warmup": warmup}  # fmt: skip


def run(quick: bool = False, bundles: list[str] | None = None) -> dict:
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    repeats, steps, warmup = (1, 3, 1) if quick else (3, 20, 3)
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "study_shape": list(STUDY_SHAPE)}
    for device in devices:
        per_device = {}
        for name in bundles or bundle_names():
            load = os.getloadavg()[0]
            per_device[name] = {
                "inference": inference_seconds(name, device, repeats),
                "training": training_step_seconds(name, device, steps, warmup),
                "load_avg_1min": round(load, 2),
            }
        results[str(device)] = per_device
        print(f"networks on {device}, {torch.get_num_threads()} torch threads; inference median of {repeats} after a warm-up, "
              f"training median of {steps} steps after {warmup}")  # fmt: skip
        print(f"  {'bundle':30s} {'input':>14s} {'infer s':>8s} {'train batch':>24s} {'s/step':>7s} {'Mvox/s':>7s} {'load':>5s}")
        for name, r in per_device.items():
            inf, tr = r["inference"], r["training"]
            print(
                f"  {name:30s} {'x'.join(map(str, inf['input_shape'])):>14s} {inf['seconds']:8.2f} "
                f"{'x'.join(map(str, tr['batch'])):>24s} {tr['seconds_per_step']:7.3f} {tr['mvoxels_per_s']:7.3f} {r['load_avg_1min']:5.1f}"
            )
    return results
