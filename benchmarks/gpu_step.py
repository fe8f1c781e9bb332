"""GPU training-step throughput for ResNet18 at 64x64, as a ladder at batch 256 and 1024: fp32, then
+ channels_last, + bf16 autocast, + torch.compile (each step adds one to the previous; compiling
every combination would spend minutes compiling). One JSON line per configuration, with the
speedup over fp32 at the same batch; exits quietly without CUDA.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from benchmarks.common import machine
from halo_core.model import build_model


def step_rate(batch: int, bf16: bool, channels_last: bool, compiled: bool, steps: int = 50) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model("resnet18", 3).cuda().to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step_model = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, 64, 64, device="cuda").contiguous(memory_format=fmt)
    y = (torch.rand(batch, device="cuda") > 0.5).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for i in range(steps + 10):
        if i == 10:  # warm-up: cuDNN autotuning and, when compiled, the compilation itself
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(step_model(x).squeeze(1).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


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
