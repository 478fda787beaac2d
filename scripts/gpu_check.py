"""One worker of ``scripts/gpu_check.sh``: a PPO training run on one device.

Trains the default model (`ModelConfig()`: d_model 64, 2 layers) on the shipped EUR/USD
sample, 64 envs x 64 steps, and prints one JSON line: env steps/s of the whole fit
(collection + update), the device and, on CUDA, the peak memory PyTorch allocated.

Usage: ``python scripts/gpu_check.py [--device cuda:0] [--timesteps 65536]
[--precision bf16-mixed]``; ``--device cpu`` runs the same code on the CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from fxai_tune.rl import build_train_config, build_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--timesteps", type=int, default=65_536)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--n-envs", type=int, default=64)
    args = parser.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.set_device(device)
    with tempfile.TemporaryDirectory() as run_dir:
        config = build_train_config(
            {
                "seed": 0,
                "run_dir": run_dir,
                "data": {"source": "sample"},
                "ppo": {"n_envs": args.n_envs, "n_steps": 64, "batch_size": 512,
                        "n_epochs": 4, "total_timesteps": args.timesteps},
                "trainer": {
                    "accelerator": "gpu" if on_cuda else "cpu",
                    "devices": str(device.index or 0) + "," if on_cuda else "1",
                    "precision": args.precision if on_cuda else "32-true",
                    "val_every_n_iterations": 10**6,
                    "enable_progress_bar": False,
                },
            }
        )
        run = build_training(config, loggers=False, checkpointing=False)
        start = time.perf_counter()
        run.trainer.fit(run.module, datamodule=run.datamodule)
        elapsed = time.perf_counter() - start
    result = {
        "device": str(device),
        "name": torch.cuda.get_device_name(device) if on_cuda else "cpu",
        "env_steps": run.datamodule.env_steps,
        "seconds": round(elapsed, 2),
        "env_steps_per_s": round(run.datamodule.env_steps / elapsed),
        "peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if on_cuda
        else None,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
