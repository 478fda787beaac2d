"""Benchmark: PPO training speed against stable-baselines3, and model FLOP efficiency.

1. CartPole-v1, matched work (8 envs x 256 steps, minibatch 256, 4 epochs, MLP 64x64, Adam):
   env steps/s of training (collection + updates) of fxai-tune's Lightning PPO vs SB3's PPO,
   both measured here, in this run, with one torch thread.
2. The default MultiBranchTransformer update: achieved FLOP/s vs a plain matmul
   (see scripts/bench_flops.py).

Needs the bench extra: ``pip install -e ".[bench]"``.
Usage: ``python scripts/bench_ppo.py [--timesteps 65536] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def time_sb3(timesteps: int, seed: int) -> float:
    """Env steps/s of SB3 PPO on the matched CartPole setting."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=256,
        batch_size=256,
        n_epochs=4,
        policy_kwargs={"net_arch": [64, 64]},
        device="cpu",
        seed=seed,
        verbose=0,
    )
    model.learn(total_timesteps=2048)  # warm-up: first-call allocations
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps, reset_num_timesteps=True)
    return timesteps / (time.perf_counter() - start)


def time_fxai(timesteps: int, seed: int) -> float:
    """Env steps/s of fxai-tune's PPOLightningModule on the matched CartPole setting."""
    from fxai_tune.rl import build_train_config, build_training

    with tempfile.TemporaryDirectory() as run_dir:
        config = build_train_config(
            {
                "seed": seed,
                "env_id": "CartPole-v1",
                "run_dir": run_dir,
                "model": {"mlp_hidden": [64, 64]},
                "ppo": {
                    "n_envs": 8,
                    "n_steps": 256,
                    "batch_size": 256,
                    "n_epochs": 4,
                    "learning_rate": 3e-4,
                    "lr_schedule": "constant",
                    "total_timesteps": timesteps,
                },
                "trainer": {
                    "accelerator": "cpu",
                    "val_every_n_iterations": 10**6,
                    "enable_progress_bar": False,
                },
            }
        )
        run = build_training(config, loggers=False, checkpointing=False)
        start = time.perf_counter()
        run.trainer.fit(run.module, datamodule=run.datamodule)
        elapsed = time.perf_counter() - start
        return run.datamodule.env_steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-flops", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    sb3, ours = [], []
    for repeat in range(args.repeats):
        # interleave so drift of the machine affects both alike
        sb3.append(time_sb3(args.timesteps, seed=repeat))
        ours.append(time_fxai(args.timesteps, seed=repeat))
        print(f"repeat {repeat}: sb3 {sb3[-1]:,.0f} steps/s, fxai-tune {ours[-1]:,.0f} steps/s")
    best_sb3, best_ours = max(sb3), max(ours)
    print(
        f"CartPole PPO training (8x256, batch 256, 4 epochs, MLP 64x64, 1 thread): "
        f"stable-baselines3 {best_sb3:,.0f} steps/s, fxai-tune {best_ours:,.0f} steps/s, "
        f"ratio {best_ours / best_sb3:.2f}x (best of {args.repeats}; target >= 1.0x, goal 1.5x)"
    )
    if not args.skip_flops:
        from bench_flops import measure_flop_efficiency

        measure_flop_efficiency()


if __name__ == "__main__":
    main()
