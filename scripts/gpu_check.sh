#!/usr/bin/env bash
# GPU check: (1) one PPO worker per visible GPU (scripts/gpu_check.py, default model, 64 envs,
# bf16-mixed), printing each worker's env steps/s, PyTorch peak memory, and the GPU's mean and
# peak utilisation and peak memory sampled by nvidia-smi every second; (2) a tiny study with
# one worker per GPU, printing trials per hour per GPU and each worker's device.
# Run on a machine with NVIDIA GPUs:
#   bash scripts/gpu_check.sh            (uses .venv if present; TIMESTEPS=65536 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
N_GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$N_GPUS" -lt 1 ]; then echo "no CUDA device visible"; exit 1; fi
$PY -c "import torch; [print(f'GPU {i}: {torch.cuda.get_device_name(i)}, bf16={torch.cuda.is_bf16_supported()}') for i in range(torch.cuda.device_count())]"
SAMPLES=$(mktemp)
nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits \
  -l 1 > "$SAMPLES" &
SMI=$!
PIDS=()
for ((i = 0; i < N_GPUS; i++)); do
  $PY scripts/gpu_check.py --device "cuda:$i" --timesteps "${TIMESTEPS:-65536}" \
    > "$SAMPLES.worker$i" 2> "$SAMPLES.worker$i.err" &
  PIDS+=($!)
done
for pid in "${PIDS[@]}"; do wait "$pid" || echo "worker $pid failed (see $SAMPLES.worker*.err)"; done
kill "$SMI" 2>/dev/null || true
for ((i = 0; i < N_GPUS; i++)); do
  echo "worker $i: $(tail -1 "$SAMPLES.worker$i")"
  awk -F', ' -v gpu="$i" '$1 == gpu { n++; u += $2; if ($2 > umax) umax = $2; if ($3 > m) m = $3 }
    END { if (n) printf "  GPU %d: utilisation mean %.0f%%, peak %d%% (%d samples), peak memory used %d MiB\n", gpu, u / n, umax, n, m }' "$SAMPLES"
done
WORK=$(mktemp -d)
cat > "$WORK/gpu_check.yaml" <<YAML
name: gpu_check
base_config: $PWD/fxai_tune/studies/configs/demo_base.yaml
overrides: [trainer.accelerator=gpu, trainer.precision=bf16-mixed, ppo.n_envs=64, ppo.n_steps=64, ppo.batch_size=512]
search_space: $PWD/fxai_tune/search_spaces/ppo_quick.yaml
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
