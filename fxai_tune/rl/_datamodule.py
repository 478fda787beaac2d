"""`RLDataModule`: the vector envs, rollout collection and minibatch serving.

A Lightning epoch is one PPO iteration: `RolloutCollectionCallback` asks this module to
collect a rollout with the current policy at epoch start, then the train "dataloader" serves
ready-made minibatches for ``n_epochs`` shuffled passes (no per-sample collation: ~1.4 ms per
minibatch for a collating DataLoader against ~4 us for slicing, docs/benchmarks.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from typing_extensions import override

from fxai_tune.model import dropout_seeds
from fxai_tune.rl._buffer import (
    Observation,
    ObservationStaging,
    RolloutBuffer,
    copy_observation_,
    first_non_finite,
    flatten_observation,
    index_observation,
    to_tensor,
)
from fxai_tune.rl._config import TrainConfig
from fxai_tune.rl._envs import make_data_manager, make_vector_env
from fxai_tune.rl._evaluation import (
    ActionFn,
    Evaluation,
    completed_episodes,
    run_episodes,
    summarize_episodes,
)

__all__ = ["RLDataModule"]

# Observations per batched critic pass after a rollout: bounds activation memory.
_EVAL_CHUNK = 4096
# Added to a transition's seed for the final observation of the episode it ended, which is
# valued (for the truncation bootstrap) but never stored: its own masks, no collision.
_FINAL_OBS_SEED_OFFSET = 1 << 48
# Added once per DDP rank to its transitions' dropout seeds: each rank its own masks.
_RANK_SEED_OFFSET = 1 << 40


class _MinibatchStream:
    """Iterable the Trainer sees as its train dataloader: ``n_epochs`` passes of minibatches.

    It yields index tensors; `RLDataModule.on_after_batch_transfer` turns each into a `Batch`
    when the Trainer consumes it (after this iteration's rollout was collected).
    """

    def __init__(self, datamodule: RLDataModule) -> None:
        self.datamodule = datamodule

    def __iter__(self) -> Iterator[torch.Tensor]:
        dm = self.datamodule
        dm.stop_update = False
        for _ in range(dm.config.ppo.n_epochs):
            for index in dm.buffer.minibatch_indices(
                dm.config.ppo.batch_size, generator=dm.shuffle_generator
            ):
                if dm.stop_update:  # target-KL early stop requested by the module
                    return
                yield index


class RLDataModule(pl.LightningDataModule):
    """Vector envs and rollouts of one training run.

    Args:
        config: The run's configuration.
    """

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.data = make_data_manager(config) if config.env_id is None else None
        self.env = make_vector_env(config, "train", num_envs=config.ppo.n_envs, data=self.data)
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self.device = torch.device("cpu")
        self.buffer = RolloutBuffer(
            self.observation_space,
            n_steps=config.ppo.n_steps,
            n_envs=config.ppo.n_envs,
            device=self.device,
        )
        # separate streams for action sampling and minibatch shuffling: Lightning may start
        # the minibatch iterator before or after collection, and neither order may matter
        self.generator = torch.Generator().manual_seed(config.seed)
        self.shuffle_generator = torch.Generator().manual_seed(config.seed + 1)
        obs, _ = self.env.reset(seed=config.seed)
        self._last_obs: Observation = to_tensor(obs, self.device)
        self.rank = 0  # DDP rank, set in `setup`
        self._staging = ObservationStaging(self.observation_space, config.ppo.n_envs, self.device)
        self._host_log_probs: torch.Tensor | None = None
        self.env_steps = 0
        self.stop_update = False
        self.difficulty = 1.0
        # filled during collection, drained by the metric callbacks
        self.finished_episodes: list[dict[str, float]] = []
        self.reward_component_sums: dict[str, np.ndarray] = {}  # name -> (sum, sum of squares)
        self.reward_component_count = 0
        self.recent_episodes: deque[dict[str, float]] = deque(maxlen=100)

    # ------------------------------------------------------------------ device
    def to_device(self, device: torch.device) -> None:
        """Move the rollout storage to the policy's device (once, at fit start)."""
        if device != self.device:
            self._allocate(device)

    def _allocate(self, device: torch.device) -> None:
        """Fresh rollout storage on ``device``."""
        self.device = device
        self.buffer = RolloutBuffer(
            self.observation_space,
            n_steps=self.config.ppo.n_steps,
            n_envs=self.config.ppo.n_envs,
            device=device,
        )
        self._staging = ObservationStaging(self.observation_space, self.config.ppo.n_envs, device)
        self._host_log_probs = None
        self._last_obs = _move(self._last_obs, device)

    def _log_probs_to_host(self, log_probs: torch.Tensor) -> torch.Tensor:
        """The step's log-probabilities on the host, through a pinned buffer on CUDA."""
        if self.device.type != "cuda":
            return log_probs
        if self._host_log_probs is None or self._host_log_probs.shape != log_probs.shape:
            self._host_log_probs = torch.empty(log_probs.shape, pin_memory=True)
        self._host_log_probs.copy_(log_probs, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return self._host_log_probs

    # ------------------------------------------------------------------ collection
    @torch.inference_mode()
    def collect_rollout(self, policy: torch.nn.Module) -> None:
        """Fill the buffer with ``n_steps`` steps of every env using ``policy``.

        The policy runs in training mode, as in the update, with one dropout seed per
        transition (`fxai_tune.model.dropout_seeds`): the update re-evaluates each transition
        with the masks it was collected with, so the PPO ratio is exactly 1 before the first
        step whatever the dropout (docs/ppo.md). Actions are sampled from the logits directly.
        A policy with separate actor and critic runs only the actor per step and the critic
        once over the whole rollout afterwards (the parameters do not change in between, so
        the numbers are the same); a policy whose heads share a trunk gives the values with
        the logits in the same pass.
        """
        buffer = self.buffer
        buffer.reset()
        was_training = policy.training
        policy.train()
        normalizer = getattr(policy, "obs_normalizer", None)
        if normalizer is not None:
            # this iteration's transform, fixed through collection, update and validation
            normalizer.freeze()
        # a shared trunk gives values for free with the logits; separate nets run the critic
        # once, batched, after the rollout
        values_per_step = getattr(policy, "shares_trunk", False)
        n_steps, n_envs = buffer.n_steps, buffer.n_envs
        first_seed = self._first_dropout_seed()
        # every transition's dropout seed, its global index: unique over the run
        buffer.seeds.copy_(
            torch.arange(first_seed, first_seed + buffer.size, device=self.device).view(
                n_steps, n_envs
            )
        )
        # host rows, one copy to the device after the rollout (no per-step host-to-device
        # copies of actions, rewards or flags)
        step_actions = np.zeros((n_steps, n_envs), dtype=np.int64)
        step_log_probs = np.zeros((n_steps, n_envs), dtype=np.float32)
        step_rewards = np.zeros((n_steps, n_envs), dtype=np.float32)
        step_terminated = np.zeros((n_steps, n_envs), dtype=np.float32)
        step_truncated = np.zeros((n_steps, n_envs), dtype=np.float32)
        copy_observation_(index_observation(buffer.obs, 0), self._last_obs)
        next_obs_tensor = _clone(self._last_obs)
        for step in range(n_steps):
            obs = index_observation(buffer.obs, step)
            with dropout_seeds(buffer.seeds[step]):
                if values_per_step:
                    logits, values = policy(obs)
                    buffer.values[step] = values.float()
                else:
                    logits = policy.actor_logits(obs)
            # the one device-to-host wait per step: the env needs the actions
            log_probs = self._log_probs_to_host(torch.log_softmax(logits.float(), dim=-1))
            try:
                actions = torch.multinomial(
                    log_probs.exp(), 1, generator=self.generator
                ).squeeze(-1)
            except RuntimeError:  # NaN/inf probabilities: say where they came from
                bad = first_non_finite(obs, "observation") or "policy logits"
                raise FloatingPointError(
                    f"non-finite value at rollout step {step}: {bad}"
                ) from None
            step_actions[step] = actions.numpy()
            step_log_probs[step] = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            next_obs, rewards, terminated, truncated, info = self.env.step(step_actions[step])
            step_rewards[step] = rewards
            step_terminated[step] = terminated
            step_truncated[step] = truncated
            done = np.logical_or(terminated, truncated)
            if done.any():
                self._store_final_observations(step, done, info)
            self._record_info(info)
            # straight into the next step's row of the buffer (pinned, asynchronous on CUDA)
            last = step == n_steps - 1
            destination = next_obs_tensor if last else index_observation(buffer.obs, step + 1)
            self._staging.copy_(destination, next_obs)
        self._last_obs = next_obs_tensor
        buffer.actions.copy_(torch.from_numpy(step_actions))
        buffer.log_probs.copy_(torch.from_numpy(step_log_probs))
        buffer.rewards.copy_(torch.from_numpy(step_rewards))
        buffer.terminated.copy_(torch.from_numpy(step_terminated))
        buffer.truncated.copy_(torch.from_numpy(step_truncated))
        self.env_steps += buffer.size
        self._check_finite(buffer.obs)

        if values_per_step:
            values = buffer.values.clone()
        else:
            flat_obs = flatten_observation(buffer.obs, buffer.size)
            values = _chunked_values(policy, flat_obs, buffer.seeds.reshape(-1))
        # the observation after the last step opens the next rollout: value it with the seed
        # it will have there
        with dropout_seeds(self._dropout_seeds(self._first_dropout_seed(), 0)):
            last_values = policy.value(self._last_obs).float()
        # final observations of ended episodes: one batched pass, each with a seed of its own
        final_values = None
        if buffer.final_observations:
            steps, envs = buffer.final_index()
            final_values = _chunked_values(
                policy,
                buffer.final_observation_batch(),
                buffer.seeds[steps, envs] + _FINAL_OBS_SEED_OFFSET,
            )
        buffer.finish(
            values=values.reshape(n_steps, n_envs),
            log_probs=buffer.log_probs.clone(),
            last_values=last_values,
            final_values=final_values,
            gamma=self.config.ppo.gamma,
            gae_lambda=self.config.ppo.gae_lambda,
        )
        if normalizer is not None:  # applied from the next iteration on
            normalizer.update(flatten_observation(buffer.obs, buffer.size), self._sum_over_ranks)
        policy.train(was_training)

    def _sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over DDP processes (identity for one): every rank gets the same statistics."""
        if self.trainer is None or self.trainer.world_size == 1:
            return tensor
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def _first_dropout_seed(self) -> int:
        """Dropout seed of the next transition: its global index, offset per DDP rank."""
        return self.env_steps + self.rank * _RANK_SEED_OFFSET

    def _dropout_seeds(self, first_seed: int, step: int) -> torch.Tensor:
        """Seeds of step ``step`` of the rollout whose first seed is ``first_seed``: the
        global transition index, unique over the run (and the same after a resume)."""
        start = first_seed + step * self.buffer.n_envs
        return torch.arange(start, start + self.buffer.n_envs, device=self.device)

    def _store_final_observations(self, step: int, done: np.ndarray, info: dict) -> None:
        final_obs, mask = info.get("final_obs"), info.get("_final_obs", done)
        env_index = np.flatnonzero(mask)
        if final_obs is None or env_index.size == 0:
            return
        if isinstance(final_obs, np.ndarray) and final_obs.dtype == object:
            # gymnasium's SyncVectorEnv: one observation object per env
            rows = [final_obs[i] for i in env_index]
            if isinstance(rows[0], dict):
                stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
            else:
                stacked = np.stack(rows)
        elif isinstance(final_obs, dict):
            stacked = {k: np.asarray(v)[env_index] for k, v in final_obs.items()}
        else:
            stacked = np.asarray(final_obs)[env_index]
        self.buffer.final_observations.append((step, env_index, stacked))

    def _record_info(self, info: dict) -> None:
        for _, stats in completed_episodes(info):
            self.finished_episodes.append(stats)
            self.recent_episodes.append(stats)
        components = info.get("reward_components")
        if components:
            for name, values in components.items():
                values = np.asarray(values, dtype=np.float64)
                sums = self.reward_component_sums.setdefault(name, np.zeros(2))
                sums += (values.sum(), np.square(values).sum())
            self.reward_component_count += self.config.ppo.n_envs

    def _check_finite(self, obs: Observation) -> None:
        bad = first_non_finite(obs, "observation")
        if bad is not None:
            raise FloatingPointError(f"non-finite value in the rollout: {bad}")
        if not torch.isfinite(self.buffer.rewards).all():
            step, env = (int(i) for i in (~torch.isfinite(self.buffer.rewards)).nonzero()[0])
            raise FloatingPointError(f"non-finite reward at step {step} of env {env}")

    def drain_episodes(self) -> list[dict[str, float]]:
        """Episodes finished since the last call."""
        episodes, self.finished_episodes = self.finished_episodes, []
        return episodes

    def drain_reward_components(self) -> dict[str, tuple[float, float]]:
        """Mean and standard deviation of each raw reward component over the env steps since
        the last call, by component name."""
        count = max(1, self.reward_component_count)
        moments = {}
        for name, (total, total_sq) in self.reward_component_sums.items():
            mean = total / count
            moments[name] = (float(mean), float(np.sqrt(max(0.0, total_sq / count - mean**2))))
        self.reward_component_sums, self.reward_component_count = {}, 0
        return moments

    # ------------------------------------------------------------------ curriculum
    def set_difficulty(self, level: float) -> None:
        """Forward the curriculum level to the training env (the FX env only)."""
        self.difficulty = level
        if hasattr(self.env, "set_difficulty"):
            self.env.set_difficulty(level)

    # ------------------------------------------------------------------ validation
    def evaluate(self, act: ActionFn, split: str = "val") -> Evaluation:
        """``act`` over ``split``, ``trainer.val_episodes`` episodes in one batch.

        The FX split is cut into that many contiguous windows (one pass over it in all);
        gymnasium envs run that many fresh episodes, sub-env ``i`` reset with seed
        ``seed + i``.

        Args:
            act: Actions of a batch of observations; validation passes the deterministic
                `PPOLightningModule.predict_action`.
            split: "val" or "test".
        """
        episodes = self.config.trainer.val_episodes
        env = make_vector_env(self.config, split, num_envs=episodes, data=self.data)
        seed = self.config.seed + 10_000 if split == "val" else self.config.seed + 20_000
        try:
            results = run_episodes(
                env,
                act,
                seed=seed,
                initial_equity=self.config.env.initial_equity,
            )
        finally:
            env.close()
        return summarize_episodes(
            results,
            score=self.config.trainer.val_score,
            periods_per_year=None if self.data is None else self.data.periods_per_year,
        )

    # ------------------------------------------------------------------ DDP ranks
    def _seed_rank(self, *entropy: int) -> None:
        """Action sampling, shuffling and env episodes of this rank from ``entropy``."""
        sample, shuffle, env = (int(s) for s in np.random.SeedSequence(entropy).generate_state(3))
        self.generator.manual_seed(sample)
        self.shuffle_generator.manual_seed(shuffle)
        obs, _ = self.env.reset(seed=env)
        self._last_obs = to_tensor(obs, self.device)

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, stage: str) -> None:
        # Under DDP every rank builds (or unpickles) the same datamodule: without seeds of
        # its own, N ranks would collect N copies of one rollout. Rank 0 keeps the run's
        # seed (what one device collects); rank r > 0 seeds from (seed, r).
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1 or stage != "fit":
            return
        # ddp_spawn hands each rank this module's tensors in shared memory: without storage
        # of its own, every rank would write its rollout into one buffer
        self._allocate(self.device)
        self._last_obs = _clone(self._last_obs)
        self.rank = int(trainer.global_rank)
        if self.rank > 0:
            self._seed_rank(self.config.seed, self.rank)

    def train_dataloader(self) -> _MinibatchStream:
        return _MinibatchStream(self)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            return self.buffer.batch(batch)
        return batch

    def val_dataloader(self) -> list[int]:
        # one item per validation: validation_step runs whole episodes itself
        return [0]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue collection exactly (saved in checkpoints)."""
        state: dict[str, Any] = {
            "env_steps": self.env_steps,
            "generator": self.generator.get_state(),
            "shuffle_generator": self.shuffle_generator.get_state(),
            "last_obs": _move(self._last_obs, torch.device("cpu")),
            "difficulty": self.difficulty,
        }
        if hasattr(self.env, "get_state"):
            state["env"] = _tensorize(self.env.get_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env_steps = int(state["env_steps"])
        self.generator.set_state(state["generator"])
        self.shuffle_generator.set_state(state["shuffle_generator"])
        self._last_obs = _move(state["last_obs"], self.device)
        self.set_difficulty(float(state.get("difficulty", 1.0)))
        if "env" in state and hasattr(self.env, "set_state"):
            self.env.set_state(_untensorize(state["env"]))
        else:
            # a gymnasium env's internal state cannot be saved: continuing from the saved
            # last_obs would pair it with a freshly built env. Start new episodes instead,
            # seeded by the run and its progress (not the first episodes again).
            sequence = np.random.SeedSequence([self.config.seed, self.env_steps])
            seed = int(sequence.generate_state(1)[0])
            obs, _ = self.env.reset(seed=seed)
            self._last_obs = to_tensor(obs, self.device)
        if self.rank > 0:
            # the checkpoint holds rank 0's streams and envs: this rank continues with its
            # own, seeded by the run, the rank and the progress (fresh episodes)
            self._seed_rank(self.config.seed, self.rank, self.env_steps)

    def teardown(self, stage: str) -> None:
        self.env.close()


def _chunked_values(
    policy: torch.nn.Module, obs: Observation, seeds: torch.Tensor
) -> torch.Tensor:
    values = []
    for start in range(0, len(seeds), _EVAL_CHUNK):
        chunk = slice(start, start + _EVAL_CHUNK)
        with dropout_seeds(seeds[chunk]):
            values.append(policy.value(index_observation(obs, chunk)))
    return torch.cat(values).float()


def _move(obs: Observation, device: torch.device) -> Observation:
    if isinstance(obs, dict):
        return {k: v.to(device) for k, v in obs.items()}
    return obs.to(device)


def _clone(obs: Observation) -> Observation:
    if isinstance(obs, dict):
        return {k: v.clone() for k, v in obs.items()}
    return obs.clone()


# Checkpoints are loaded with weights_only=True, which admits tensors and plain containers
# but not numpy arrays: convert the env state both ways.
def _tensorize(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value)).clone()}
    if isinstance(value, dict):
        return {k: _tensorize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tensorize(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _untensorize(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return value["__ndarray__"].numpy().copy()
        return {k: _untensorize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untensorize(v) for v in value]
    return value
