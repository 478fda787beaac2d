#!/usr/bin/env bash
# GPU check of the tuner's CUDA paths: a tiny study with one worker per visible GPU, bf16-mixed.
# Prints trials per hour per GPU and each worker's device. Run on a machine with NVIDIA GPUs:
#   bash scripts/gpu_check.sh            (uses .venv if present)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
N_GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$N_GPUS" -lt 1 ]; then echo "no CUDA device visible"; exit 1; fi
WORK=$(mktemp -d)
$PY -c "import torch; [print(f'GPU {i}: {torch.cuda.get_device_name(i)}, bf16={torch.cuda.is_bf16_supported()}') for i in range(torch.cuda.device_count())]"
cat > "$WORK/gpu_check.yaml" <<YAML
name: gpu_check
base_config: $PWD/studies/configs/demo_base.yaml
overrides: [trainer.accelerator=gpu, trainer.precision=bf16-mixed, ppo.n_envs=64, ppo.n_steps=64, ppo.batch_size=512]
search_space: $PWD/search_spaces/ppo_quick.yaml
direction: maximize
sampler: {name: tpe, seed: 0}
pruner: {name: none}
budget: {total_timesteps: 32768, val_every_n_iterations: 4}
n_trials: $((2 * N_GPUS))
storage: sqlite:///$WORK/gpu_check.db
artifact_dir: $WORK/artifacts
YAML
START=$(date +%s.%N)
$PY -m fxai_tune.cli.main run --study "$WORK/gpu_check.yaml" --workers "$N_GPUS"
END=$(date +%s.%N)
$PY - "$WORK/gpu_check.yaml" "$START" "$END" "$N_GPUS" <<'PY'
import sys
from fxai_tune.tune import load_study_config, open_study
config = load_study_config(sys.argv[1])
start, end, gpus = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
trials = open_study(config).trials
done = [t for t in trials if t.state.is_finished()]
for t in trials:
    print(f"trial {t.number}: {t.state.name} worker {t.user_attrs.get('worker')} "
          f"device {t.user_attrs.get('device')} wall {t.user_attrs.get('wall_time_s', 0):.1f} s "
          f"precision {t.user_attrs.get('config', {}).get('trainer', {}).get('precision')}")
rate = len(done) / (end - start) * 3600
print(f"{len(done)} trials in {end - start:.0f} s on {gpus} GPU(s): "
      f"{rate:.0f} trials/h, {rate / gpus:.0f} trials/h per GPU")
PY
