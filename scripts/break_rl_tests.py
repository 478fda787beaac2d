"""Break-tests of the RL wiring: break one thing, run the fast suite, see which tests fail.

STYLE.md rule 11: a test is trusted only after it failed on broken code. Each entry of
`BREAKS` is a small edit (old text -> new text, found exactly once) that breaks one thing
issue 10 names. For each, the script applies the edit in a scratch git worktree, runs the
fast RL tests there, records the failing tests and restores the file with ``git checkout``.
A break that no test catches is a gap in the suite; a break whose text is no longer found
means the code moved and the entry needs updating.

Usage (from a scratch worktree, never one with uncommitted work)::

    git worktree add --detach /tmp/wt-break HEAD
    python scripts/break_rl_tests.py /tmp/wt-break [--json out.json] [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

TESTS = (
    "tests/test_rl_correctness.py",
    "tests/test_rl_training.py",
    "tests/test_ppo_math.py",
    "tests/test_rl_config.py",
    "tests/test_model_config.py",
    "tests/test_model_mlp.py",
    "tests/test_model_transformer.py",
)

_MODULE = "fxai_tune/rl/_module.py"
_DATA = "fxai_tune/rl/_datamodule.py"
_CALLBACKS = "fxai_tune/rl/_callbacks.py"
_TRAIN = "fxai_tune/rl/_train.py"
_EVALUATION = "fxai_tune/rl/_evaluation.py"
_ENVS = "fxai_tune/rl/_envs.py"
_BUFFER = "fxai_tune/rl/_buffer.py"
_GAE = "fxai_tune/rl/_gae.py"
_NORMALIZE = "fxai_tune/model/_normalize.py"
_CONFIG = "fxai_tune/rl/_config.py"
_ENGINE = "fxai_tune/env/_engine.py"

# name -> (file, old text, new text)
BREAKS: dict[str, tuple[str, str, str]] = {
    "optimizer_step_deleted": (_MODULE, "        optimizer.step()\n", ""),
    "optimizer_lr_zero": (
        _MODULE,
        "lr=self.ppo.learning_rate, eps=1e-5",
        "lr=0.0, eps=1e-5",
    ),
    "truncation_bootstrap_zeroed": (
        _BUFFER,
        "            self.next_values[steps, envs] = final_values",
        "            self.next_values[steps, envs] = 0.0",
    ),
    "final_observations_dropped": (
        _DATA,
        "            if done.any():\n"
        "                self._store_final_observations(step, done, info)\n",
        "",
    ),
    "gae_truncation_as_termination": (
        _GAE,
        "    not_terminal = 1.0 - terminated.to(dtype)",
        "    not_terminal = 1.0 - (terminated.bool() | truncated.bool()).to(dtype)",
    ),
    "terminated_truncated_swapped": (
        _DATA,
        "            step_terminated[step] = terminated\n"
        "            step_truncated[step] = truncated",
        "            step_terminated[step] = truncated\n"
        "            step_truncated[step] = terminated",
    ),
    "target_kl_disabled": (
        _MODULE,
        '        if self.ppo.target_kl is not None and stats["approx_kl"]',
        '        if False and stats["approx_kl"]',
    ),
    "target_kl_after_the_step": (
        _MODULE,
        "            datamodule.stop_update = True\n            return\n",
        "            datamodule.stop_update = True\n",
    ),
    "validation_sampled": (
        _MODULE,
        "        self, obs: np.ndarray | dict | Observation, deterministic: bool = True",
        "        self, obs: np.ndarray | dict | Observation, deterministic: bool = False",
    ),
    "validation_in_train_mode": (
        _MODULE,
        "        evaluation = self.trainer.datamodule.evaluate(",
        "        self.policy.train()\n        evaluation = self.trainer.datamodule.evaluate(",
    ),
    "rollout_in_eval_mode": (
        _DATA,
        "        policy.train()\n        normalizer",
        "        policy.eval()\n        normalizer",
    ),
    "update_without_the_dropout_seeds": (
        _MODULE,
        "        with dropout_seeds(batch.seeds):",
        "        with dropout_seeds(None):",
    ),
    "clip_of_scaled_gradients": (
        _MODULE,
        "        self.manual_backward(loss)\n",
        "        self.manual_backward(loss)\n"
        "        torch.nn.utils.clip_grad_norm_(self.parameters(), self.ppo.max_grad_norm)\n",
    ),
    "raise_on_a_scaler_skip": (
        _MODULE,
        "        if self._grad_scaler() is None:\n            # counted",
        "        if True:\n            # counted",
    ),
    "collection_without_autocast": (
        _CALLBACKS,
        "        with trainer.precision_plugin.forward_context():",
        # a no-op context in place of the Trainer's autocast (no new import needed)
        '        with __import__("contextlib").nullcontext():',
    ),
    "auto_bf16_with_accelerator_cpu": (
        _TRAIN,
        '    on_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()',
        "    on_cuda = torch.cuda.is_available()",
    ),
    "last_iteration_not_validated": (
        _CALLBACKS,
        "            trainer.check_val_every_n_epoch = 1",
        "            pass",
    ),
    "learning_rate_logged_is_the_next": (
        _MODULE,
        '        metrics["train/learning_rate"] = self.optimizers().param_groups[0]["lr"]',
        '        metrics["train/learning_rate"] = self.ppo.learning_rate * _schedule('
        "self.ppo.lr_schedule, (self.current_epoch + 1) / max(1, self.ppo.n_iterations))",
    ),
    "learning_rate_monitor_back": (
        _TRAIN,
        "    if loggers and uses_gpu(config.trainer.accelerator):",
        "    from pytorch_lightning.callbacks import LearningRateMonitor\n"
        "    if loggers:\n"
        "        callbacks.append(LearningRateMonitor())\n"
        "    if loggers and uses_gpu(config.trainer.accelerator):",
    ),
    "resume_keeps_the_saved_last_obs": (
        _DATA,
        "            obs, _ = self.env.reset(seed=seed)\n"
        "            self._last_obs = to_tensor(obs, self.device)",
        "            pass",
    ),
    "normalisation_mean_not_saved": (
        _NORMALIZE,
        '        self.register_buffer("mean", torch.zeros(shape))',
        '        self.register_buffer("mean", torch.zeros(shape), persistent=False)',
    ),
    "normalisation_updated_in_forward": (
        _NORMALIZE,
        "        normalized = (obs - self.applied_mean)",
        "        self.update(obs)\n        self.freeze()\n"
        "        normalized = (obs - self.applied_mean)",
    ),
    "normalisation_never_frozen": (_DATA, "            normalizer.freeze()", "            pass"),
    "spaces_not_in_the_hyperparameters": (
        _MODULE,
        '                "observation_space": space_to_dict(observation_space),\n',
        "",
    ),
    "checkpoint_name_without_the_reward": (
        _TRAIN,
        '        filename="ppo-{epoch:04d}-{" + MONITOR + ":.3f}",',
        '        filename="ppo-{epoch:04d}",',
    ),
    "top_k_of_one": (_TRAIN, "        save_top_k=SAVE_TOP_K,", "        save_top_k=1,"),
    "episode_reward_max_renamed": (
        _CALLBACKS,
        '        metrics["episode/reward_max"]',
        '        metrics["episode/reward_maximum"]',
    ),
    "episode_length_not_logged": (
        _CALLBACKS,
        '            metrics["episode/length"] =',
        "            _ =",
    ),
    "reward_component_std_not_logged": (
        _CALLBACKS,
        '            metrics[f"reward/{name}_std"] = std\n',
        "",
    ),
    "timesteps_total_not_logged": (
        _CALLBACKS,
        '        pl_module.log_metrics({"timesteps/total": float(trainer.datamodule.env_steps)})',
        "        pass",
    ),
    "device_stats_never_attached": (
        _TRAIN,
        "    if loggers and uses_gpu(config.trainer.accelerator):",
        "    if False:",
    ),
    "one_validation_episode_by_default": (
        _CONFIG,
        "    val_episodes: int = 10\n",
        "    val_episodes: int = 1\n",
    ),
    "gymnasium_validation_with_one_seed": (
        _EVALUATION,
        "    obs, _ = env.reset(seed=seed)\n",
        "    obs, _ = env.reset(seed=None if seed is None else [seed] * env.num_envs)\n",
    ),
    "fx_validation_in_random_windows": (
        _ENVS,
        '    mode = "random" if split == "train" else "sequential"',
        '    mode = "random"',
    ),
    "fx_validation_repeats_one_window": (
        _ENGINE,
        "        starts = first + idx * span // self.num_envs\n"
        "        stops = first + (idx + 1) * span // self.num_envs",
        "        starts = first + 0 * idx\n"
        "        stops = first + span // self.num_envs + 0 * idx",
    ),
    "host_sync_per_minibatch": (
        _MODULE,
        "        self._n_minibatches += 1\n",
        "        self._n_minibatches += 1\n        float(loss)\n",
    ),
}


def run_break(worktree: Path, name: str, tests: tuple[str, ...]) -> dict[str, object]:
    """Apply break ``name`` in ``worktree``, run ``tests``, restore; the failing tests."""
    relative, old, new = BREAKS[name]
    path = worktree / relative
    text = path.read_text()
    if text.count(old) != 1:
        return {"error": f"the text to break is found {text.count(old)} times in {relative}"}
    path.write_text(text.replace(old, new))
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=300",
             "-rfE", *tests],
            cwd=worktree,
            env={**os.environ, "PYTHONPATH": str(worktree)},
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        subprocess.run(["git", "-C", str(worktree), "checkout", "--", relative], check=True)
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.MULTILINE)))
    lines = proc.stdout.strip().splitlines()
    return {
        "failed": failed,
        "summary": lines[-1] if lines else proc.stderr[-300:],
        "seconds": round(time.monotonic() - start),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("worktree", type=Path, help="scratch git worktree to break in")
    parser.add_argument("names", nargs="*", help=f"breaks to run (default all): {list(BREAKS)}")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BREAKS]
    if unknown:
        parser.error(f"unknown breaks {unknown}; valid: {list(BREAKS)}")
    dirty = subprocess.run(["git", "-C", str(args.worktree), "status", "--porcelain"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if dirty:
        parser.error(f"{args.worktree} has uncommitted changes; use a clean scratch worktree")
    results = {}
    for name in args.names or list(BREAKS):
        results[name] = run_break(args.worktree, name, TESTS)
        print(name, json.dumps(results[name]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    uncaught = [n for n, r in results.items() if not r.get("failed")]
    print(f"uncaught or not applied: {uncaught}" if uncaught else "every break was caught")
    return 1 if uncaught else 0


if __name__ == "__main__":
    sys.exit(main())
