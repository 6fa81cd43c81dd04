#!/usr/bin/env bash
# Issue #20's compression table (docs/quality.md): two coarse layouts trained
# with recall_default, then every layout scored on amazon-scientific
# validation beside the uncompressed reference model.
#   experiments/prompt_compression.sh REFERENCE_HF_DIR ITEM_TABLE RUN_DIR
# e.g. experiments/prompt_compression.sh runs/transfer/sci/recall_default/hf \
#        runs/transfer/sci/sids/item_table.tsv runs/compression
# (the reference: experiments/transfer.sh's model). Each training is skipped
# when its output exists, so a stopped run resumes.
set -euo pipefail
M=$1 TABLE=$2 R=$3
TF=${TF_GENREC:-.venv/bin/tf-genrec}
for layout in 3x1 3x2; do
  out=$R/coarse_$layout
  [ -e "$out/hf/config.json" ] || $TF train --item_table="$TABLE" \
    --output_dir="$out" --full_items="${layout%x*}" \
    --old_item_levels="${layout#*x}" --eval_every_epochs=4
done
.venv/bin/python experiments/prompt_compression.py --item_table="$TABLE" \
  --output="$R/valid.json" \
  --variant="full=$M" \
  --variant="window_10=$M:{\"max_history\": 10}" \
  --variant="window_5=$M:{\"max_history\": 5}" \
  --variant="window_10+rollover_5=$M:{\"max_history\": 10, \"rollover\": 5}" \
  --variant="coarse_3x1_untrained=$M:{\"full_items\": 3, \"old_item_levels\": 1}" \
  --variant="coarse_3x1=$R/coarse_3x1/hf" \
  --variant="coarse_3x2=$R/coarse_3x2/hf"
