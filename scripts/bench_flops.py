"""FLOP efficiency of the default MultiBranchTransformer's PPO update on one CPU thread.

Counts the FLOPs of one forward + backward (``torch.utils.flop_counter.FlopCounterMode``),
times forward + backward + fused Adam step on a 256-sample minibatch, and compares the
achieved FLOP/s with a plain matmul of the model's dominant GEMM shape timed in the same run
(the feed-forward ``(256 * 64, 64) x (64, 128)``). Target: ratio >= 40%. For comparison the
same model with PyTorch's stock ``nn.TransformerEncoderLayer`` forward is timed too.

Usage: ``python scripts/bench_flops.py [--batch 256] [--repeats 9] [--markdown]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import types
from collections.abc import Callable

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from fxai_tune.model import AttentionPool, ModelConfig, MultiBranchTransformer

SPACE = gym.spaces.Dict(
    {
        "1h": gym.spaces.Box(-5.0, 5.0, (64, 8)),
        "4h": gym.spaces.Box(-5.0, 5.0, (32, 8)),
        "1d": gym.spaces.Box(-5.0, 5.0, (8, 8)),
        "portfolio": gym.spaces.Box(-5.0, 5.0, (4,)),
    }
)
N_ACTIONS = 3


def _calls_per_block(fn: Callable[[], object], seconds: float) -> int:
    fn()
    start = time.perf_counter()
    fn()
    return max(1, int(seconds / max(time.perf_counter() - start, 1e-6)))


def _time_interleaved(
    fns: dict[str, Callable[[], object]], *, repeats: int, seconds: float = 0.25
) -> dict[str, list[float]]:
    """Seconds per call of each function, one block of calls each in turn, ``repeats`` rounds.

    Interleaving keeps the ratios fair when other processes load the (2-core) machine.
    """
    calls = {name: _calls_per_block(fn, seconds) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - start) / calls[name])
    return times


def _update_fn(model: nn.Module, obs: dict[str, Tensor], batch: int) -> Callable[[], None]:
    """One PPO minibatch update: forward, the PPO loss, backward, fused Adam step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, eps=1e-5, fused=True)
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

    return update


def _stock_copy(model: MultiBranchTransformer) -> MultiBranchTransformer:
    """The same model running ``nn.TransformerEncoderLayer``'s own forward (MHA path)."""
    stock = MultiBranchTransformer(SPACE, N_ACTIONS, ModelConfig())
    stock.load_state_dict(model.state_dict())
    for module in stock.modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            module.__class__ = nn.TransformerEncoderLayer  # the subclass adds no state
    return stock


def _gemm_pool(self: AttentionPool, x: Tensor) -> Tensor:
    """The removed block-diagonal two-GEMM attention pool, timed against the einsum one."""
    batch, _, d_model = x.shape
    heads = self.n_heads
    eye = torch.eye(heads, dtype=x.dtype)
    query = self.query.unsqueeze(-1) * (eye * self.scale).unsqueeze(1)
    weights = torch.matmul(x, query.reshape(d_model, heads)).softmax(dim=1)  # (B, L, H)
    mixed = torch.bmm(weights.transpose(1, 2), x)  # (B, H, d_model)
    pooled = mixed.view(batch, heads, heads, -1).diagonal(dim1=1, dim2=2)  # (B, d_head, H)
    return pooled.transpose(1, 2).reshape(batch, d_model)


def _gemm_pool_copy(model: MultiBranchTransformer) -> MultiBranchTransformer:
    """The same model with the block-diagonal GEMM attention pool."""
    other = MultiBranchTransformer(SPACE, N_ACTIONS, ModelConfig())
    other.load_state_dict(model.state_dict())
    for module in other.modules():
        if isinstance(module, AttentionPool):
            module.forward = types.MethodType(_gemm_pool, module)
    return other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="minibatch size")
    parser.add_argument("--repeats", type=int, default=9, help="timing rounds (median taken)")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args()
    measure_flop_efficiency(batch=args.batch, repeats=args.repeats, markdown=args.markdown)


def measure_flop_efficiency(*, batch: int = 256, repeats: int = 9, markdown: bool = False) -> None:
    """Time and print the rows of the table (see the module docstring)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MultiBranchTransformer(SPACE, N_ACTIONS, ModelConfig())
    stock = _stock_copy(model)
    gemm_pool = _gemm_pool_copy(model)
    obs = {k: torch.randn(batch, *s.shape) for k, s in SPACE.spaces.items()}

    with FlopCounterMode(display=False) as counter:
        logits, values = model(obs)
        (logits.sum() + values.sum()).backward()
    model.zero_grad(set_to_none=True)
    update_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as fwd_counter:  # its module tracker fails under no_grad
        model(obs)
    forward_flops = fwd_counter.get_total_flops()

    def forward_only() -> None:
        with torch.no_grad():
            model(obs)

    # dominant GEMM: the feed-forward expansion of the longest branch, (B*64, 64) x (64, 128)
    a, b = torch.randn(batch * 64, 64), torch.randn(64, 128)
    out = torch.empty(batch * 64, 128)
    matmul_flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    big_a, big_b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    big_out = torch.empty(1024, 1024)
    flops = {
        "update": update_flops,
        "stock": update_flops,
        "gemm_pool": update_flops,
        "forward": forward_flops,
        "matmul": matmul_flops,
        "big": 2 * 1024**3,
    }

    times = _time_interleaved(
        {
            "update": _update_fn(model, obs, batch),
            "stock": _update_fn(stock, obs, batch),
            "gemm_pool": _update_fn(gemm_pool, obs, batch),
            "forward": forward_only,
            "matmul": lambda: torch.mm(a, b, out=out),
            "big": lambda: torch.mm(big_a, big_b, out=big_out),
        },
        repeats=repeats,
    )
    seconds = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: flops[k] / seconds[k] for k in flops}
    # ratio to the matmul of the same round, median over rounds: robust to changing load
    ratio = {
        k: statistics.median(
            (flops[k] / t) / (matmul_flops / m) for t, m in zip(times[k], times["matmul"])
        )
        for k in flops
    }
    rows = [
        ("update", f"update: fwd + bwd + fused Adam, batch {batch}"),
        ("stock", "same, stock nn.TransformerEncoderLayer forward"),
        ("gemm_pool", "same, block-diagonal GEMM attention pool"),
        ("forward", "forward only, no grad"),
        ("matmul", f"matmul {tuple(a.shape)} x {tuple(b.shape)}"),
        ("big", "matmul 1024 x 1024 x 1024"),
    ]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, 1 thread, batch {batch}, {n_params:,} parameters")
    for key, label in rows:
        print(f"{label:50s} {flops[key] / 1e9:7.3f} GFLOP {seconds[key] * 1e3:8.2f} ms "
              f"{rate[key] / 1e9:6.1f} GFLOP/s {ratio[key]:5.0%} of matmul")
    print(f"ratio update / matmul: {ratio['update']:.0%} (target >= 40%)")
    if markdown:
        print("\n| measurement | GFLOP | time (ms) | GFLOP/s | vs matmul |")
        print("|---|---|---|---|---|")
        for key, label in rows:
            print(f"| {label} | {flops[key] / 1e9:.3f} | {seconds[key] * 1e3:.1f} | "
                  f"{rate[key] / 1e9:.1f} | {ratio[key]:.0%} |")


if __name__ == "__main__":
    main()
