"""Rollout storage for N vector envs x T steps, and minibatches served from it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch

from fxai_tune.rl._gae import compute_gae

__all__ = [
    "Batch",
    "Observation",
    "ObservationStaging",
    "RolloutBuffer",
    "allocate_observation",
    "to_tensor",
]

Observation = torch.Tensor | dict[str, torch.Tensor]


class Batch(NamedTuple):
    """One PPO minibatch (flattened over steps and envs)."""

    obs: Observation
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    seeds: torch.Tensor
    """Dropout seed of each transition: the update reuses the collection's masks."""


def allocate_observation(
    space: gym.Space, leading: tuple[int, ...], device: torch.device, *, pin_memory: bool = False
) -> Observation:
    """Zero tensors shaped ``leading + space.shape`` for a Box or a Dict of Boxes.

    ``pin_memory`` allocates page-locked host memory (CUDA staging buffers).
    """
    if isinstance(space, gym.spaces.Dict):
        return {
            k: allocate_observation(s, leading, device, pin_memory=pin_memory)
            for k, s in space.spaces.items()
        }
    if isinstance(space, gym.spaces.Box):
        return torch.zeros(
            leading + space.shape, dtype=torch.float32, device=device, pin_memory=pin_memory
        )
    raise TypeError(f"observation space {space} is not supported; use Box or Dict of Box")


def to_tensor(obs: np.ndarray | dict, device: torch.device) -> Observation:
    """numpy observation (batched) -> float32 tensor(s) on ``device`` without extra copies."""
    if isinstance(obs, dict):
        return {k: to_tensor(v, device) for k, v in obs.items()}
    return torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)


def index_observation(obs: Observation, index: torch.Tensor | int | slice) -> Observation:
    """``obs[index]`` for a tensor or a dict of tensors."""
    if isinstance(obs, dict):
        return {k: v[index] for k, v in obs.items()}
    return obs[index]


def flatten_observation(obs: Observation, n: int) -> Observation:
    """Merge the two leading (step, env) dimensions."""
    if isinstance(obs, dict):
        return {k: v.reshape((n,) + v.shape[2:]) for k, v in obs.items()}
    return obs.reshape((n,) + obs.shape[2:])


def copy_observation_(dst: Observation, src: Observation, *, non_blocking: bool = False) -> None:
    """In-place ``dst[...] = src`` for tensors or dicts of tensors."""
    if isinstance(dst, dict):
        for k, v in dst.items():
            v.copy_(src[k], non_blocking=non_blocking)
    else:
        dst.copy_(src, non_blocking=non_blocking)


class ObservationStaging:
    """Copies env observations (numpy, on the host) into device tensors.

    On CUDA each copy goes through one page-locked buffer with ``non_blocking=True``: a copy
    from pageable memory is staged by the driver and blocks the host. The buffer is
    rewritten only after the previous copy out of it has finished (a CUDA event). On other
    devices it is a plain ``copy_``.

    Args:
        space: Single-env observation space.
        n_envs: Observations per copy.
        device: Where the destination tensors live.
    """

    def __init__(self, space: gym.Space, n_envs: int, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pinned = (
            allocate_observation(space, (n_envs,), torch.device("cpu"), pin_memory=True)
            if self.cuda
            else None
        )
        self._copied: torch.cuda.Event | None = None

    def copy_(self, dst: Observation, obs: np.ndarray | dict) -> None:
        """``dst[...] = obs``; on CUDA asynchronous (stream-ordered before later kernels)."""
        host = to_tensor(obs, torch.device("cpu"))  # a view of the numpy arrays (float32)
        if self.pinned is None:
            copy_observation_(dst, host)
            return
        if self._copied is not None:
            self._copied.synchronize()  # the previous copy has read the pinned buffer
        copy_observation_(self.pinned, host)
        copy_observation_(dst, self.pinned, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()


def first_non_finite(obs: Observation, name: str = "observation") -> str | None:
    """Name and position of the first NaN/inf entry of ``obs``, or None if all finite."""
    items = obs.items() if isinstance(obs, dict) else [("", obs)]
    for key, value in items:
        bad = ~torch.isfinite(value)
        if bad.any():
            position = tuple(int(i) for i in bad.nonzero()[0])
            label = f"{name}[{key!r}]" if key else name
            return f"{label} at index {position} = {value[position].item()}"
    return None


class RolloutBuffer:
    """Preallocated tensors for one rollout of ``n_steps`` x ``n_envs`` transitions.

    Collection writes step rows in place; `finish` computes GAE advantages with the right
    bootstrap for truncated episodes (their final observation's value) and none for
    terminated ones. Every tensor lives on ``device`` (the policy's); the final observations
    of ended episodes wait on the host and are valued in one batched pass after the rollout.
    """

    def __init__(
        self, observation_space: gym.Space, *, n_steps: int, n_envs: int, device: torch.device
    ) -> None:
        self.n_steps, self.n_envs, self.device = n_steps, n_envs, device
        shape = (n_steps, n_envs)
        self.obs = allocate_observation(observation_space, shape, device)
        self.actions = torch.zeros(shape, dtype=torch.long, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.terminated = torch.zeros(shape, device=device)
        self.truncated = torch.zeros(shape, device=device)
        self.log_probs = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        self.next_values = torch.zeros(shape, device=device)
        self.advantages = torch.zeros(shape, device=device)
        self.returns = torch.zeros(shape, device=device)
        # per-transition seed of the policy's dropout masks (`fxai_tune.model.dropout_seeds`)
        self.seeds = torch.zeros(shape, dtype=torch.long, device=device)
        # (step, env indices, final observations) of episodes that ended during the rollout,
        # on the host (numpy) until the one batched value pass after the rollout
        self.final_observations: list[tuple[int, np.ndarray, np.ndarray | dict]] = []

    @property
    def size(self) -> int:
        """Transitions held."""
        return self.n_steps * self.n_envs

    def reset(self) -> None:
        """Forget the episode ends of the previous rollout."""
        self.final_observations.clear()

    def final_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(step, env) of every final observation, in the order of `final_observations`."""
        steps = np.concatenate([np.full(len(e), s) for s, e, _ in self.final_observations])
        envs = np.concatenate([e for _, e, _ in self.final_observations])
        return (
            torch.as_tensor(steps, device=self.device),
            torch.as_tensor(envs, device=self.device),
        )

    def final_observation_batch(self) -> Observation:
        """All final observations as one batch on the device (one copy per rollout)."""
        rows = [obs for _, _, obs in self.final_observations]
        if isinstance(rows[0], dict):
            return {k: to_tensor(np.concatenate([r[k] for r in rows]), self.device) for k in rows[0]}
        return to_tensor(np.concatenate(rows), self.device)

    def finish(
        self,
        *,
        values: torch.Tensor,
        log_probs: torch.Tensor,
        last_values: torch.Tensor,
        final_values: torch.Tensor | None,
        gamma: float,
        gae_lambda: float,
    ) -> None:
        """Store the batched critic/actor pass and compute advantages and returns.

        Args:
            values: V(s_t) for every stored observation, shape (T, N).
            log_probs: log pi(a_t | s_t) of the stored actions, shape (T, N).
            last_values: V of the observation after the last step, shape (N,).
            final_values: V of every final observation, in the order of
                `final_observations` (their rows concatenated); None if no episode ended.
            gamma: Discount factor.
            gae_lambda: GAE lambda.
        """
        self.values.copy_(values)
        self.log_probs.copy_(log_probs)
        self.next_values[:-1] = values[1:]
        self.next_values[-1] = last_values
        # rows where an episode ended: the next stored obs is a reset obs, not s_{t+1}
        if self.final_observations:
            steps, envs = self.final_index()
            self.next_values[steps, envs] = final_values
        advantages, returns = compute_gae(
            self.rewards,
            self.values,
            self.next_values,
            self.terminated,
            self.truncated,
            gamma=gamma,
            gae_lambda=gae_lambda,
        )
        self.advantages.copy_(advantages)
        self.returns.copy_(returns)

    def minibatch_indices(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Iterator[torch.Tensor]:
        """One shuffled pass over the rollout as index tensors of ``batch_size``.

        Indices, not data: Lightning prefetches a batch before the epoch-start hooks run,
        i.e. before the rollout is collected, so the data is gathered by `batch` when the
        minibatch is consumed. A remainder smaller than ``batch_size`` is dropped. The
        permutation is drawn on the host (the generator's stream) and moved to the device
        once per pass, not once per minibatch.
        """
        order = torch.randperm(self.size, generator=generator).to(self.device)
        for start in range(0, self.size - batch_size + 1, batch_size):
            yield order[start : start + batch_size]

    def batch(self, index: torch.Tensor) -> Batch:
        """The minibatch of flattened transitions at ``index`` (no per-sample Python work)."""
        n = self.size
        index = index.to(self.device)
        flat = (
            self.actions, self.log_probs, self.values, self.advantages, self.returns, self.seeds
        )
        return Batch(
            index_observation(flatten_observation(self.obs, n), index),
            *(t.reshape(n)[index] for t in flat),
        )
