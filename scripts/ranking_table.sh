#!/usr/bin/env bash
# The measured table of docs/ranking.md: on MovieLens-100K (the recbole data package's copy), 3 seeds,
#  (1) deep_ranker (crosses, MLP 256-128-64) -> mlp_ranker (MLP 32): alone vs hints and rocket;
#  (2) mf dim 100 -> mf dim 10: the student alone vs pointwise, pairwise, listwise, rd, rrd.
# Scale (a 2-core CPU shared with other jobs): mf students 15 epochs, the mf teacher 30; the deep
# teacher and students 6 epochs; timings with profile.min_run_time=0.2. Then kdexp-report over all.
#   bash scripts/ranking_table.sh [output folder]      (~30-40 min on a busy 2-core machine)
set -euo pipefail
OUT=${1:-outputs/ranking_table}
PY=${PYTHON:-python}
COMMON=(task=ranking logger=tensorboard profile.min_run_time=0.2 seed=0,1,2)
DEEP=(teacher=deep_ranker student=mlp_ranker teacher.train.max_epochs=6 trainer.max_epochs=6)
$PY -m kdexp.train -m "${COMMON[@]}" "${DEEP[@]}" method=vanilla,hints hydra.sweep.dir="$OUT/deep"
$PY -m kdexp.train -m "${COMMON[@]}" "${DEEP[@]}" method=rocket method.shared_stages=1 hydra.sweep.dir="$OUT/deep_rocket"
$PY -m kdexp.train -m "${COMMON[@]}" method=vanilla,pointwise,pairwise,listwise,rd,rrd trainer.max_epochs=15 \
  hydra.sweep.dir="$OUT/mf"
$PY -c 'import sys; from kdexp.report import main; sys.exit(main(sys.argv[1:]))' "$OUT"
