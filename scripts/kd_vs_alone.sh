#!/usr/bin/env bash
# Does distillation help? The default student trained alone vs distilled, over 3 seeds.
#   scripts/kd_vs_alone.sh [extra overrides...]      e.g. scripts/kd_vs_alone.sh student=cnn_small
# Runs 6 jobs (one Hydra multirun) and prints kdexp-report's mean ± std table.
set -euo pipefail
cd "$(dirname "$0")/.."
sweep_dir="outputs/multirun/kd_vs_alone/$(date +%Y-%m-%d_%H-%M-%S)"
.venv/bin/kdexp -m method=vanilla,kd seed=0,1,2 "hydra.sweep.dir=$sweep_dir" "$@"
.venv/bin/kdexp-report "$sweep_dir" --csv "$sweep_dir/report.csv"
