"""GPU training-step throughput for ResNet18 at 64x64, as a ladder at batch 256 and 1024: fp32, then
+ channels_last, + bf16 autocast, + torch.compile (each step adds one to the previous; compiling
every combination would spend minutes compiling). One JSON line per configuration, with the
speedup over fp32 at the same batch; exits quietly without CUDA.
"""

from __future__ import annotations

import json
import statistics
import sys

import torch

from benchmarks.common import machine
from halo_core.model.network import bare_training_step, step_seconds


def step_rate(batch: int, bf16: bool, channels_last: bool, compiled: bool, steps: int = 50) -> float:
    device = torch.device("cuda")
    step = bare_training_step("resnet18", 3, batch, device, channels_last=channels_last, bf16=bf16, compiled=compiled)
    # ten warm-up steps: cuDNN autotuning and, when compiled, the compilation itself
    return batch / statistics.median(step_seconds(step, device, steps, warmup=10))


def main() -> None:
    if not torch.cuda.is_available():
        print(json.dumps({"benchmark": "gpu_step", "skipped": "no CUDA device", **machine()}))
        return
    torch.backends.cudnn.benchmark = True
    ladder = [(False, False, False), (False, True, False), (True, True, False), (True, True, True)]
    for batch in (256, 1024):
        baseline = None
        for bf16, channels_last, compiled in ladder:
            rate = step_rate(batch, bf16, channels_last, compiled)
            baseline = baseline or rate
            print(json.dumps({"benchmark": "gpu_step", "batch_size": batch, "bf16": bf16,
                              "channels_last": channels_last, "compiled": compiled, "img_per_s": round(rate),
                              "speedup_vs_fp32": round(rate / baseline, 2), **machine()}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
