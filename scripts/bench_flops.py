"""FLOP efficiency of the default MultiBranchTransformer's PPO update on one CPU thread.

Counts the FLOPs of one forward + backward (``torch.utils.flop_counter.FlopCounterMode``),
times forward + backward + fused Adam step on a 256-sample minibatch, and compares the
achieved FLOP/s with a plain matmul of the model's dominant GEMM shape timed in the same run
(the feed-forward ``(256 * 64, 64) x (64, 128)``). Target: ratio >= 40%.

Usage: ``python scripts/bench_flops.py [--batch 256] [--repeats 7] [--markdown]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import torch
from torch.utils.flop_counter import FlopCounterMode

from fxai_tune.model import ModelConfig, MultiBranchTransformer

SPACE = gym.spaces.Dict(
    {
        "1h": gym.spaces.Box(-5.0, 5.0, (64, 8)),
        "4h": gym.spaces.Box(-5.0, 5.0, (32, 8)),
        "1d": gym.spaces.Box(-5.0, 5.0, (8, 8)),
        "portfolio": gym.spaces.Box(-5.0, 5.0, (4,)),
    }
)
N_ACTIONS = 3


def _time(fn: Callable[[], object], *, repeats: int, min_seconds: float = 0.3) -> float:
    """Median seconds per call over ``repeats`` blocks of calls lasting ``min_seconds`` each."""
    fn()
    start = time.perf_counter()
    fn()
    per_call = max(time.perf_counter() - start, 1e-6)
    calls = max(1, int(min_seconds / per_call))
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        blocks.append((time.perf_counter() - start) / calls)
    return statistics.median(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="minibatch size")
    parser.add_argument("--repeats", type=int, default=7, help="timing blocks (median taken)")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch = args.batch
    model = MultiBranchTransformer(SPACE, N_ACTIONS, ModelConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, eps=1e-5, fused=True)
    obs = {k: torch.randn(batch, *s.shape) for k, s in SPACE.spaces.items()}
    actions = torch.randint(N_ACTIONS, (batch,))
    old_log_prob = torch.full((batch,), -1.1)
    advantages, returns = torch.randn(batch), torch.randn(batch)

    def update() -> None:
        logits, values = model(obs)
        log_probs = logits.log_softmax(-1)
        new_log_prob = log_probs.gather(1, actions[:, None]).squeeze(1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        # the PPO loss (as in fxai_tune.rl._losses, inlined to keep this script model-only)
        ratio = (new_log_prob - old_log_prob).exp()
        pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(0.8, 1.2)).mean()
        v_loss = 0.5 * (values - returns).square().mean()
        loss = pg_loss + 0.5 * v_loss - 0.01 * entropy.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward_only() -> None:
        with torch.no_grad():
            model(obs)

    counter = FlopCounterMode(display=False)
    with counter:
        logits, values = model(obs)
        (logits.sum() + values.sum()).backward()
    model.zero_grad(set_to_none=True)
    update_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as fwd_counter:  # its module tracker fails under no_grad
        model(obs)
    forward_flops = fwd_counter.get_total_flops()

    # dominant GEMM: the feed-forward expansion of the longest branch, (B*64, 64) x (64, 128)
    a, b = torch.randn(batch * 64, 64), torch.randn(64, 128)
    out = torch.empty(batch * 64, 128)
    matmul_flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    big_a, big_b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    big_out = torch.empty(1024, 1024)

    update_s = _time(update, repeats=args.repeats)
    forward_s = _time(forward_only, repeats=args.repeats)
    matmul_s = _time(lambda: torch.mm(a, b, out=out), repeats=args.repeats)
    big_s = _time(lambda: torch.mm(big_a, big_b, out=big_out), repeats=args.repeats)

    update_rate = update_flops / update_s
    forward_rate = forward_flops / forward_s
    matmul_rate = matmul_flops / matmul_s
    big_rate = 2 * 1024**3 / big_s
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, 1 thread, batch {batch}, {n_params:,} parameters")
    print(f"update (fwd+bwd+Adam): {update_flops / 1e9:.3f} GFLOP in {update_s * 1e3:.1f} ms "
          f"= {update_rate / 1e9:.1f} GFLOP/s")
    print(f"forward (no grad):     {forward_flops / 1e9:.3f} GFLOP in {forward_s * 1e3:.1f} ms "
          f"= {forward_rate / 1e9:.1f} GFLOP/s")
    print(f"matmul {tuple(a.shape)}x{tuple(b.shape)}: {matmul_s * 1e3:.2f} ms "
          f"= {matmul_rate / 1e9:.1f} GFLOP/s")
    print(f"matmul 1024^3 (peak reference): {big_rate / 1e9:.1f} GFLOP/s")
    print(f"ratio update / matmul: {update_rate / matmul_rate:.0%} (target >= 40%)")
    print(f"ratio forward / matmul: {forward_rate / matmul_rate:.0%}")
    if args.markdown:
        print()
        print("| measurement | GFLOP | time (ms) | GFLOP/s | vs matmul |")
        print("|---|---|---|---|---|")
        print(f"| update: fwd + bwd + fused Adam, batch {batch} | {update_flops / 1e9:.3f} | "
              f"{update_s * 1e3:.1f} | {update_rate / 1e9:.1f} | {update_rate / matmul_rate:.0%} |")
        print(f"| forward only, no grad | {forward_flops / 1e9:.3f} | {forward_s * 1e3:.1f} | "
              f"{forward_rate / 1e9:.1f} | {forward_rate / matmul_rate:.0%} |")
        print(f"| matmul {tuple(a.shape)}x{tuple(b.shape)} | {matmul_flops / 1e9:.3f} | "
              f"{matmul_s * 1e3:.2f} | {matmul_rate / 1e9:.1f} | 100% |")
        print(f"| matmul 1024^3 | {2 * 1024**3 / 1e9:.3f} | {big_s * 1e3:.1f} | "
              f"{big_rate / 1e9:.1f} | {big_rate / matmul_rate:.0%} |")


if __name__ == "__main__":
    main()
