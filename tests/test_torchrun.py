"""``multi_gpu_train.json`` runs under ``torchrun`` with two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def test_multi_gpu_train_runs_two_gloo_processes_on_cpu_and_saves_a_state_dict(tiny_bundle, tmp_path):
    configs = tiny_bundle / "configs"
    out, models = tmp_path / "eval", tmp_path / "models"
    # one machine: gloo talks over loopback, whatever interface the hostname resolves to
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"GLOO_SOCKET_IFNAME": "lo"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "training",
        "--bundle_root", str(tiny_bundle),
        "--config_file", str([str(configs / "train.json"), str(configs / "multi_gpu_train.json")]),
        "--meta_file", str(configs / "metadata.json"),
        "--logging_file", str(configs / "logging.conf"),
        "--num_epochs", "1",
        "--output_dir", str(out),
        "--ckpt_dir", str(models),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    first = ""
    if proc.returncode != 0 and "exitcode: -6" in proc.stderr:
        # a rank aborted inside gloo ("terminate called without an active exception"), seen about
        # once in tens of full-suite runs and never alone: one more try, both logs kept on failure
        first = (proc.stdout + proc.stderr)[-3000:]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, first + "\n--- retry ---\n" + (proc.stdout + proc.stderr)[-4000:]
    assert "Key metric: val_mae best value" in proc.stdout + proc.stderr  # validation ran (on rank 0)
    # the CheckpointSaver unwrapped DistributedDataParallel: plain keys, no "module." prefix
    state = torch.load(models / "model.pt", weights_only=True)
    assert state.keys() == torch.load(tiny_bundle / "models" / "model.pt", weights_only=True).keys()


@pytest.mark.slow
def test_a_real_bundle_trains_under_torchrun_with_its_multi_gpu_override(tmp_path):
    # pet_nac_to_pct on tiny phantoms: initialize (errors, determinism) and prepare (dataset on rank 0, barrier,
    # saver, resume) of multi_gpu_train.json, and the validation after the last epoch writes model.pt
    from common.simulation.datasets import generate_dataset

    tiny = {"shape": [48, 48, 24], "spacing_mm": [10.0, 10.0, 10.0], "n_angles": 48}
    with torch.random.fork_rng():
        generate_dataset("pet_nac_to_pct", tmp_path / "data", n=10, seed=0, progress=False, params=tiny)  # 2 validation subjects
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "pet_nac_to_pct"
    configs = bundle / "configs"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"GLOO_SOCKET_IFNAME": "lo"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "training", "--bundle_root", str(bundle),
        "--config_file", str([str(configs / "train.json"), str(configs / "multi_gpu_train.json")]),
        "--meta_file", str(configs / "metadata.json"), "--dataset_dir", str(tmp_path / "data"),
        "--output_dir", str(tmp_path / "models"), "--n_subjects", "10", "--dataset_params", json.dumps(tiny),
        "--num_epochs", "1", "--val_interval", "5", "--patch_size", "[32, 32, 16]",
        "--pixdim", "[10.0, 10.0, 10.0]", "--roi_size", "[48, 48, 24]",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (tmp_path / "models" / "model.pt").is_file() and list((tmp_path / "models" / "runs").glob("events.out.tfevents.*"))
