"""``multi_gpu_train.json`` runs under ``torchrun`` with two CPU processes (gloo).

Each run gets a rendezvous port that was free a moment before (bound to port 0 on 127.0.0.1 and
released), static rendezvous on 127.0.0.1 and gloo on the loopback interface, so parallel test
runs on one machine never meet on one port; a failing run shows its whole output (tail of stdout
and stderr, the command) in the assertion message. No retry: a failure is a failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TIMEOUT_S = 600  # the tiny bundle takes ~30 s on 2 loaded cores; a hang (e.g. a rank waiting on a dead peer) ends here


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the system just handed out (bind to 0) and that is free again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, cwd: Path, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run`` with 2 processes on this machine, static rendezvous on a
    free port of 127.0.0.1 (not ``--standalone``'s c10d store), gloo over loopback; output captured."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MASTER_ADDR", "MASTER_PORT")}
    env |= {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--node_rank", "0", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args,
    ]  # fmt: skip
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(
            f"torchrun timed out after {timeout} s: {' '.join(cmd)}\n--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-6000:]}"
        )


def report(proc: subprocess.CompletedProcess) -> str:
    """The assertion message of a failed run: return code, command, and the tails of both streams."""
    return (
        f"rc {proc.returncode}: {' '.join(map(str, proc.args))}\n--- stdout ---\n{proc.stdout[-4000:]}"
        f"\n--- stderr ---\n{proc.stderr[-6000:]}"
    )


def test_multi_gpu_train_runs_two_gloo_processes_on_cpu_and_saves_a_state_dict(tiny_bundle, tmp_path):
    configs = tiny_bundle / "configs"
    out, models = tmp_path / "eval", tmp_path / "models"
    args = [
        "-m", "monai.bundle", "run", "training",
        "--bundle_root", str(tiny_bundle),
        "--config_file", str([str(configs / "train.json"), str(configs / "multi_gpu_train.json")]),
        "--meta_file", str(configs / "metadata.json"),
        "--logging_file", str(configs / "logging.conf"),
        "--num_epochs", "1",
        "--output_dir", str(out),
        "--ckpt_dir", str(models),
    ]  # fmt: skip
    proc = torchrun(*args, cwd=tmp_path)
    assert proc.returncode == 0, report(proc)
    assert "Key metric: val_mae best value" in proc.stdout + proc.stderr, report(proc)  # validation ran (on rank 0)
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
    args = [
        "-m", "monai.bundle", "run", "training", "--bundle_root", str(bundle),
        "--config_file", str([str(configs / "train.json"), str(configs / "multi_gpu_train.json")]),
        "--meta_file", str(configs / "metadata.json"), "--dataset_dir", str(tmp_path / "data"),
        "--output_dir", str(tmp_path / "models"), "--n_subjects", "10", "--dataset_params", json.dumps(tiny),
        "--num_epochs", "1", "--val_interval", "5", "--patch_size", "[32, 32, 16]",
        "--pixdim", "[10.0, 10.0, 10.0]", "--roi_size", "[48, 48, 24]",
    ]  # fmt: skip
    proc = torchrun(*args, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, report(proc)
    assert (tmp_path / "models" / "model.pt").is_file() and list((tmp_path / "models" / "runs").glob("events.out.tfevents.*")), (
        report(proc)
    )
