"""`MultiBranchTransformer`: one transformer encoder per timeframe window, fused, two heads."""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fxai_tune.model._config import ModelConfig
from fxai_tune.model._dropout import ConsistentDropout, number_dropout_sites
from fxai_tune.model._mlp import init_linear, make_mlp

__all__ = ["AttentionPool", "MultiBranchTransformer"]


class AttentionPool(nn.Module):
    """Multi-head attention pooling of a sequence with a learned query, without projections.

    Head ``h`` scores token ``l`` by ``<x[l, h], q[h]> / sqrt(d_head)`` on its own slice of the
    features and returns the softmax-weighted sum of those slices. Skipping the key/value
    projections keeps it cheap; the encoder before it already projects. The query starts at
    zero, i.e. as mean pooling.

    Two einsums over the ``(B, L, H, d_head)`` view of ``x``: the plain form stays because a
    block-diagonal two-GEMM version measured no faster (``scripts/bench_flops.py``: 287 ms per
    update with it, 276 without; docs/benchmarks.md).
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Parameter(torch.zeros(n_heads, d_model // n_heads))
        self.scale = 1.0 / math.sqrt(d_model // n_heads)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, L, d_model) -> (B, d_model)``."""
        batch, length, d_model = x.shape
        heads = x.view(batch, length, self.n_heads, d_model // self.n_heads)
        # softmax over tokens of <x[l, h], q[h]> / sqrt(d_head), per head
        weights = (torch.einsum("blhd,hd->blh", heads, self.query) * self.scale).softmax(dim=1)
        return torch.einsum("blh,blhd->bhd", weights, heads).reshape(batch, d_model)


class _LastPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x[:, -1]


class _MeanPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=1)


class _EncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` whose training-time self-attention skips layout copies.

    ``nn.MultiheadAttention`` moves batch-first inputs to sequence-first and packs q, k, v
    into a new ``(3, L, B, d_model)`` tensor, which costs several full copies of the
    activations forward and backward. Here q, k, v are strided views of the one in-projection
    output fed straight to ``scaled_dot_product_attention``, whose CPU flash kernel takes
    strides; the output comes back in ``(B, L, H, d_head)`` order, so merging heads is free.
    Same parameters and state-dict keys as the parent. Kept because it pays: the update is
    1.33-1.43x faster than with the stock layer (``scripts/bench_flops.py``: 287 vs 410 ms and
    417 vs 555 ms in two runs, docs/benchmarks.md).
    The parent's fused inference path
    (``torch._transformer_encoder_layer_fwd``) is bypassed: on CPU it measured slower than
    this one (108 vs 78 ms at batch 256, equal at batch 8), and skipping its checks trims the
    per-call overhead that dominates rollout collection with few envs.

    Its dropouts (feed-forward, both residual branches and the attention weights) are
    `ConsistentDropout`: PPO collects and updates with the same masks (see ``docs/ppo.md``).
    """

    def __init__(self, d_model: int, nhead: int, *args: object, **kwargs: object) -> None:
        super().__init__(d_model, nhead, *args, **kwargs)  # type: ignore[arg-type]
        p = self.dropout.p
        self.dropout = ConsistentDropout(p)
        self.dropout1 = ConsistentDropout(p)
        self.dropout2 = ConsistentDropout(p)
        self.attn_dropout = ConsistentDropout(self.self_attn.dropout)

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Pre-norm block ``x + SA(LN(x))`` then ``x + FF(LN(x))`` (no masks in this model)."""
        if src_mask is not None or src_key_padding_mask is not None or not self.norm_first:
            return super().forward(src, src_mask, src_key_padding_mask, is_causal)
        x = src + self._sa_block(self.norm1(src), None, None, is_causal=is_causal)
        return x + self._ff_block(self.norm2(x))

    def _sa_block(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool = False,
    ) -> Tensor:
        if attn_mask is not None or key_padding_mask is not None:
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal=is_causal)
        attn = self.self_attn
        batch, length, d_model = x.shape
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = (
            t.view(batch, length, attn.num_heads, -1).transpose(1, 2)
            for t in qkv.split(d_model, dim=-1)
        )
        if self.training and self.attn_dropout.p > 0 and not is_causal:
            # attention-weight dropout with the masks of the samples' seeds (SDPA draws its own)
            weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
            out = self.attn_dropout(weights) @ v
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=attn.dropout if self.training else 0.0, is_causal=is_causal
            )
        out = F.linear(
            out.transpose(1, 2).reshape(batch, length, d_model),
            attn.out_proj.weight,
            attn.out_proj.bias,
        )
        return self.dropout1(out)


def _encoder_layer(config: ModelConfig) -> nn.TransformerEncoderLayer:
    # Pre-norm (Xiong et al. 2020) trains stably without warm-up; ReLU is the cheapest
    # activation on CPU.
    return _EncoderLayer(
        config.d_model,
        config.n_heads,
        dim_feedforward=config.dim_feedforward,
        dropout=config.dropout,
        activation="relu",
        batch_first=True,
        norm_first=True,
    )


class _SequenceBranch(nn.Module):
    """``(B, window, n_features) -> (B, d_model)``: projection, positions, encoder, pooling."""

    def __init__(self, window: int, n_features: int, config: ModelConfig) -> None:
        super().__init__()
        d_model = config.d_model
        self.input_proj = nn.Linear(n_features, d_model)
        if config.ortho_init:
            init_linear(self.input_proj, 1.0)
        self.pos_embedding = nn.Parameter(torch.empty(window, d_model))
        nn.init.normal_(self.pos_embedding, std=0.02)
        self.encoder = nn.TransformerEncoder(
            _encoder_layer(config), config.n_layers, enable_nested_tensor=False
        )
        pools = {
            "attention": lambda: AttentionPool(d_model, config.n_heads),
            "last": _LastPool,
            "mean": _MeanPool,
        }
        self.pool = pools[config.pooling]()
        # The pre-norm stack's final LayerNorm, applied after pooling: per-token, so the same
        # result for "last" pooling and B*window fewer normalisations in every case.
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        h = self.input_proj(x) + self.pos_embedding
        for layer in self.encoder.layers:  # the container's forward only adds checks here
            h = layer(h)
        return self.norm(self.pool(h))


class _VectorBranch(nn.Module):
    """``(B, n) -> (B, d_model)``: MLP, then a linear map to ``d_model`` and a LayerNorm."""

    def __init__(self, n_inputs: int, config: ModelConfig) -> None:
        super().__init__()
        hidden = config.mlp_hidden
        out = nn.Linear(hidden[-1], config.d_model)
        if config.ortho_init:
            init_linear(out, 1.0)
        self.net = nn.Sequential(
            make_mlp(n_inputs, hidden, config.activation, ortho_init=config.ortho_init),
            out,
            nn.LayerNorm(config.d_model),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _AttentionFusion(nn.Module):
    """A learned query attends over the branch embeddings (PMA, Lee et al. 2019)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, config.d_model))
        self.attn = nn.MultiheadAttention(config.d_model, config.n_heads, batch_first=True)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        query = self.query.expand(tokens.shape[0], -1, -1)
        fused, _ = self.attn(query, tokens, tokens, need_weights=False)
        return self.norm(fused.squeeze(1))


class _TransformerFusion(nn.Module):
    """One encoder layer over the branch embeddings (plus branch-identity embeddings), mean."""

    def __init__(self, n_branches: int, config: ModelConfig) -> None:
        super().__init__()
        self.branch_embedding = nn.Parameter(torch.empty(n_branches, config.d_model))
        nn.init.normal_(self.branch_embedding, std=0.02)
        self.layer = _encoder_layer(config)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.norm(self.layer(tokens + self.branch_embedding).mean(dim=1))


class MultiBranchTransformer(nn.Module):
    """Actor-critic over a ``Dict`` observation of timeframe windows and vectors.

    Every 2-D ``Box`` entry ``(window, n_features)`` (one timeframe) is a branch: a linear
    projection to ``d_model``, learned positional embeddings, a pre-norm
    ``nn.TransformerEncoder`` and pooling to one vector. Every 1-D ``Box`` entry (e.g.
    ``"portfolio"``) goes through an MLP to ``d_model``. The branch embeddings
    ``(B, n_branches, d_model)`` are fused by attention pooling with a learned query or by a
    one-layer transformer; ``action_head`` and ``value_head`` read the fused vector.

    Branch order is the order of ``observation_space.spaces``. Actor and critic share the
    trunk, so ``actor_logits`` and ``value`` each cost a full pass: where both are needed
    (e.g. per rollout step), one ``forward`` gives both for the price of one.

    Args:
        observation_space: ``gymnasium.spaces.Dict`` of 1-D and 2-D ``Box`` spaces.
        n_actions: Number of discrete actions.
        config: Network sizes and choices.

    Raises:
        TypeError: If the space is not a ``Dict`` or holds a non-``Box`` entry.
        ValueError: If an entry is not 1-D or 2-D, or the ``Dict`` is empty.

    Example:
        >>> from gymnasium.spaces import Box, Dict
        >>> space = Dict({"1h": Box(-1, 1, (16, 5)), "portfolio": Box(-1, 1, (3,))})
        >>> model = MultiBranchTransformer(space, 3, ModelConfig(d_model=32))
        >>> obs = {k: torch.zeros(2, *s.shape) for k, s in space.spaces.items()}
        >>> logits, value = model(obs)
        >>> tuple(logits.shape), tuple(value.shape)
        ((2, 3), (2,))
    """

    shares_trunk = True
    """Actor and critic share the trunk: collect logits and values in one pass."""

    def __init__(
        self, observation_space: gym.spaces.Dict, n_actions: int, config: ModelConfig
    ) -> None:
        super().__init__()
        if not isinstance(observation_space, gym.spaces.Dict):
            raise TypeError(
                f"MultiBranchTransformer needs a gymnasium.spaces.Dict, got {observation_space!r}"
            )
        if not observation_space.spaces:
            raise ValueError(f"observation space has no entries, got {observation_space!r}")
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions=}")
        self.config = config
        self.n_actions = n_actions
        self.branches = nn.ModuleDict()
        for key, space in observation_space.spaces.items():
            if not isinstance(space, gym.spaces.Box):
                raise TypeError(f"observation entry {key!r} must be a Box, got {space!r}")
            if len(space.shape) == 2:
                self.branches[key] = _SequenceBranch(*space.shape, config)
            elif len(space.shape) == 1:
                self.branches[key] = _VectorBranch(space.shape[0], config)
            else:
                raise ValueError(
                    f"observation entry {key!r} must be 1-D (vector) or 2-D (window, features), "
                    f"got shape {space.shape}"
                )
        if config.fusion == "attention":
            self.fusion: nn.Module = _AttentionFusion(config)
        else:
            self.fusion = _TransformerFusion(len(self.branches), config)
        self.action_head = nn.Linear(config.d_model, n_actions)
        self.value_head = nn.Linear(config.d_model, 1)
        if config.ortho_init:
            init_linear(self.action_head, 0.01)  # near-uniform initial policy
            init_linear(self.value_head, 1.0)
        number_dropout_sites(self)

    def features(self, obs: dict[str, Tensor]) -> Tensor:
        """Fused embedding ``(B, d_model)`` shared by both heads."""
        dtype = self.action_head.weight.dtype
        tokens = torch.stack(
            [branch(obs[key].to(dtype)) for key, branch in self.branches.items()], dim=1
        )
        return self.fusion(tokens)

    def actor_logits(self, obs: dict[str, Tensor]) -> Tensor:
        """Action logits, shape ``(B, n_actions)``."""
        return self.action_head(self.features(obs))

    def value(self, obs: dict[str, Tensor]) -> Tensor:
        """State values, shape ``(B,)``."""
        return self.value_head(self.features(obs)).squeeze(-1)

    def forward(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Logits ``(B, n_actions)`` and values ``(B,)`` from one pass through the trunk."""
        features = self.features(obs)
        return self.action_head(features), self.value_head(features).squeeze(-1)
