"""``multi_gpu_train.json`` runs under ``torchrun`` with two CPU processes (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch


def test_multi_gpu_train_runs_two_gloo_processes_on_cpu_and_saves_a_state_dict(tiny_bundle, tmp_path):
    configs = tiny_bundle / "configs"
    out, models = tmp_path / "eval", tmp_path / "models"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
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
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "Key metric: val_mae best value" in proc.stdout + proc.stderr  # validation ran (on rank 0)
    # the CheckpointSaver unwrapped DistributedDataParallel: plain keys, no "module." prefix
    state = torch.load(models / "model.pt", weights_only=True)
    assert state.keys() == torch.load(tiny_bundle / "models" / "model.pt", weights_only=True).keys()
