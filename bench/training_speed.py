#!/usr/bin/env python3
"""Training step time of RFNet in fp32 and bf16 autocast, side by side in one run.

One optimizer step (forward, loss, backward, AdamW) on a batch of random RGB-D inputs at
the main job's training size, alternating the two precisions so both see the same
machine load; medians over `--steps` steps of each after a warm-up. bf16 pays off only
where the processor computes it natively (AMX or AVX512-BF16 on x86, `bf16_native`);
elsewhere oneDNN emulates it and it is slower.

  .venv/bin/python bench/training_speed.py --json [--steps 10 --batch 8 --size 128x160 --threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))

from rfnet.network import RFNet, RFNetConfig  # noqa: E402
from rfnet.training import IGNORE, bf16_native  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", default="128x160", help="input HxW (the main job trains at 128x160)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = RFNet(RFNetConfig(num_classes=30)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    rgb, depth = torch.randn(args.batch, 3, h, w), torch.randn(args.batch, h, w)
    labels = torch.randint(0, 30, (args.batch, h, w))

    def step(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            logits = model(rgb, depth)
        loss = loss_fn(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for bf16 in (False, True):   # warm-up: oneDNN picks its kernels on first use
        step(bf16)
    times = {"fp32": [], "bf16": []}
    for _ in range(args.steps):
        times["fp32"].append(step(False))
        times["bf16"].append(step(True))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"batch": args.batch, "input": f"{h}x{w}", "threads": args.threads, "steps_each": args.steps,
           "bf16_native": bf16_native("cpu"), "step_s_median": {k: round(v, 4) for k, v in med.items()},
           "bf16_speedup": round(med["fp32"] / med["bf16"], 2)}
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
