"""Consistent dropout (Hausknecht & Wagener 2022, arXiv:2202.11818) for PPO.

PPO's ratio ``pi_theta(a|s) / pi_old(a|s)`` is 1 before the first update only if the update
evaluates the very network that chose the action. Dropout draws a new mask per forward pass,
so a policy sampled with one mask and re-evaluated with another has a ratio != 1 before any
step (and a collection in ``eval()`` has no mask at all). Consistent dropout stores one seed
per transition and derives that transition's masks from it, at collection and at every update
pass: the same sub-network acts and is updated, so the ratio is exactly 1 before the first
step and dropout still regularises. Outside `dropout_seeds` the modules fall back to ordinary
dropout in training mode; in ``eval()`` (validation) they do nothing.

The masks come from a counter-based hash of (seed, dropout site, element index), so no mask
is stored: a minibatch recomputes its samples' masks from their seeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ConsistentDropout", "dropout_seeds", "number_dropout_sites"]

_SEEDS: ContextVar[Tensor | None] = ContextVar("fxai_dropout_seeds", default=None)
_LOW32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # < 2**27: products of 32-bit values stay below 2**59, exact in int64


@contextmanager
def dropout_seeds(seeds: Tensor | None) -> Iterator[None]:
    """Inside this block, sample ``b`` of every batch uses the masks of ``seeds[b]``.

    Args:
        seeds: Non-negative int64 seeds, one per sample of the batches run inside; None
            restores ordinary (random) dropout.

    Example:
        >>> layer = ConsistentDropout(0.5).train()
        >>> x, seeds = torch.ones(2, 8), torch.tensor([3, 4])
        >>> with dropout_seeds(seeds):
        ...     a, b = layer(x), layer(x)
        >>> bool((a == b).all())
        True
    """
    token = _SEEDS.set(seeds)
    try:
        yield
    finally:
        _SEEDS.reset(token)


def _mix32(x: Tensor | int) -> Tensor | int:
    """Integer hash of 32-bit values (int64 tensors or Python ints), a splitmix-style avalanche."""
    x = ((x >> 16) ^ x) * _MIX & _LOW32
    x = ((x >> 16) ^ x) * _MIX & _LOW32
    return (x >> 16) ^ x


def keep_mask(seeds: Tensor, site: int, shape: torch.Size, p: float) -> Tensor:
    """Boolean keep-mask of shape ``(len(seeds), *shape)``, P(keep) = 1 - p, from the seeds."""
    per_sample = _mix32(_mix32((seeds >> 32) & _LOW32) ^ (seeds & _LOW32) ^ _mix32(site + 1))
    per_element = _mix32(torch.arange(shape.numel(), device=seeds.device, dtype=torch.int64))
    bits = _mix32(per_sample.unsqueeze(1) ^ per_element.unsqueeze(0))
    # 24 uniform bits against the drop probability
    return ((bits >> 8) >= int(p * (1 << 24))).view(len(seeds), *shape)


class ConsistentDropout(nn.Module):
    """``nn.Dropout`` whose masks follow the per-sample seeds of `dropout_seeds`.

    Args:
        p: Drop probability in [0, 1).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p=}")
        self.p = p
        self.site = 0
        """Index of this module among the model's dropout sites (see `number_dropout_sites`)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        seeds = _SEEDS.get()
        if seeds is None:
            return F.dropout(x, self.p, training=True)
        if seeds.shape != x.shape[:1]:
            raise ValueError(
                f"dropout_seeds has {tuple(seeds.shape)} seeds for a batch of {x.shape[0]}"
            )
        keep = keep_mask(seeds, self.site, x.shape[1:], self.p)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, site={self.site}"


def number_dropout_sites(model: nn.Module) -> None:
    """Give every `ConsistentDropout` of ``model`` its own site index, in module order.

    Deterministic (the same in a rebuilt model), so resumed runs and reloaded checkpoints
    draw the same masks from the same seeds.
    """
    for site, module in enumerate(m for m in model.modules() if isinstance(m, ConsistentDropout)):
        module.site = site
