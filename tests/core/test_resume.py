"""A training run killed with SIGKILL resumes from its last complete checkpoint and ends with the
same weights, bit for bit, as a run that was never interrupted (CPU, fixed thread count)."""

import os
import signal
import subprocess
import sys
import time

import torch

EPOCHS = 4


def _train(filtered_dir, out, **popen):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # bit-exact resume is promised for fp32 (bf16 autocast may pick other kernels on another machine)
    cmd = [sys.executable, "-m", "halo_core.train", "--preset", "smoke", "--set", f"epochs={EPOCHS}",
           "--set", "precision=fp32", "--set", f"scheduler.T_0={EPOCHS}", "--data", filtered_dir, "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)


def _weights(out):
    return torch.load(out / "model.pt", weights_only=True)["model"]


def test_sigkill_mid_training_then_rerun_gives_identical_weights(tmp_path, filtered_dir):
    reference = _train(filtered_dir, tmp_path / "reference")
    killed = _train(filtered_dir, tmp_path / "killed")
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 120
    # the sidecar is written after the weights and records their sha256: it marks a complete checkpoint
    while not last.with_suffix(".json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "killed" / "model.pt").exists()
    saved_epoch = torch.load(last, weights_only=True)["epoch"]
    assert saved_epoch < EPOCHS - 1, "the run finished before it was killed; nothing was resumed"

    resumed = _train(filtered_dir, tmp_path / "killed")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert f"resumed from {last} at epoch {saved_epoch + 1}" in err
    assert reference.wait(timeout=300) == 0
    a, b = _weights(tmp_path / "reference"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
