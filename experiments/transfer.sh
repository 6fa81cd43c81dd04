#!/usr/bin/env bash
# Issue #23's runs: the README recipe, unchanged, on one dataset directory.
#   experiments/transfer.sh DATA_DIR RUN_DIR SPLITS [PRESET]
# e.g. experiments/transfer.sh ../shared/datasets/amazon-office runs/transfer/office test
# SPLITS is a comma list of evaluate splits (valid,test on the tuning data;
# test only on data nothing was chosen on). PRESET defaults to recall_default;
# recall_distill uses the run's own early-stopped SASRec as the teacher.
# Each step is skipped when its output exists, so a stopped run resumes.
set -euo pipefail
DATA=$1 R=$2 SPLITS=$3 PRESET=${4:-recall_default}
TF=${TF_GENREC:-.venv/bin/tf-genrec}
mkdir -p "$R"
step() { local out=$1; shift; [ -e "$out" ] && return 0; echo "== $*"; "$@"; }

step "$R/text_emb.npy" $TF embed --data_dir="$DATA" --output="$R/text_emb.npy"
step "$R/sids/item_table.tsv" $TF build_sids --data_dir="$DATA" \
  --embeddings="$R/text_emb.npy" --output_dir="$R/sids"
step "$R/sasrec_report.json" $TF train_sasrec --data_dir="$DATA" \
  --output="$R/sasrec_report.json" --model_output="$R/sasrec"
teacher=()
[ "$PRESET" = recall_distill ] && teacher=(--teacher_dir="$R/sasrec")
G=$R/$PRESET
step "$G/hf/config.json" $TF train --data_dir="$DATA" \
  --item_table="$R/sids/item_table.tsv" --output_dir="$G" --preset="$PRESET" "${teacher[@]}"
step "$G/models/1" $TF export --checkpoint_dir="$G/hf" \
  --item_table="$R/sids/item_table.tsv" --export_base_path="$PWD/$G/models" \
  --max_beam_width=300 --default_beam_width=300 --default_top_n=300
for split in ${SPLITS//,/ }; do
  out=$G/eval_$split.txt
  [ -e "$out" ] && continue
  $TF evaluate --data_dir="$DATA" --saved_model_dir="$G/models/1" \
    --split="$split" --sasrec_dir="$R/sasrec" | tee "$out.part"
  mv "$out.part" "$out"
done
