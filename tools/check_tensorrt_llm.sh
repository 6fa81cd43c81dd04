#!/usr/bin/env bash
# The TensorRT-LLM engine's end-to-end check, for a GPU machine with
# TensorRT-LLM 1.2.x installed (docs/tensorrt_llm.md). NOT run in CI and not
# run yet anywhere: CI has no GPU.
#
#   tools/check_tensorrt_llm.sh [work_dir]      (default runs/check_trt)
#
# 1. builds the op library with the binding (TENSORRT_LLM_ROOT),
# 2. trains the demo generator with sid_softmax=trie (the only mode the
#    engine reproduces; the demo's default is "level"),
# 3. builds fp16 and fp32 engines (tf-genrec build_engine),
# 4. exports the recall model with --engine=cpu and --engine=tensorrt_llm,
# 5. compares each TensorRT-LLM export with the CPU one: top-10 item overlap
#    per validation user (fp32 should be ~1.0, fp16 close to it),
# 6. runs the serving benchmark on the fp16 export.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/check_trt}
PY=.venv/bin/python
TG=.venv/bin/tf-genrec
W=${BEAM_WIDTH:-64}

export TENSORRT_LLM_ROOT=${TENSORRT_LLM_ROOT:-$($PY -c \
  'import os, tensorrt_llm; print(os.path.dirname(tensorrt_llm.__file__))')}
$PY -c 'import tensorrt_llm; v = tensorrt_llm.__version__; \
  assert v.startswith("1.2."), f"need TensorRT-LLM 1.2.x, found {v}"'
$PY setup.py -q build_ext --inplace

# Steps 1-3 of the demo (embeddings, semantic IDs) are reused from runs/demo.
$TG demo --work_dir=runs/demo --num_users_shown=0 >/dev/null
$TG train --item_table=runs/demo/sids/item_table.tsv \
  --output_dir="$WORK/generator" --steps=1000 --dropout=0 --item_drop_rate=0 \
  --sid_softmax=trie

for dtype in float16 float32; do
  $TG build_engine --checkpoint_dir="$WORK/generator/hf" \
    --item_table=runs/demo/sids/item_table.tsv --max_beam_width=$W \
    --dtype=$dtype --output_dir="$WORK/engine_$dtype"
done

export_model() {  # engine name, base path, extra flags
  $TG export --graph=ad_recall --checkpoint_dir="$WORK/generator/hf" \
    --item_table=runs/demo/sids/item_table.tsv --export_base_path="$2" \
    --version=1 --max_beam_width=$W --default_beam_width=$W \
    --default_top_n=10 --engine="$1" "${@:3}"
}
export_model cpu "$WORK/models/cpu"
for dtype in float16 float32; do
  export_model tensorrt_llm "$WORK/models/trt_$dtype" \
    --engine_dir="$WORK/engine_$dtype"
done

for dtype in float16 float32; do
  $PY - "$WORK/models/cpu/1" "$WORK/models/trt_$dtype/1" "$dtype" "$W" <<'PYEOF'
import sys
import numpy as np
import tensorflow as tf
from tf_genrec.data.amazon import leave_one_out, load_amazon_scientific
from tf_genrec.evaluation.saved_model_recall import recall_saved_model
from tf_genrec.generation import tensorrt_llm
tensorrt_llm.require_library()  # tf_genrec.ops loads it when present
cpu_dir, trt_dir, dtype, width = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
histories = leave_one_out(load_amazon_scientific().histories).valid_inputs()[:2000]
cpu = recall_saved_model(cpu_dir, histories, width, 10)
trt = recall_saved_model(trt_dir, histories, width, 10)
overlap = np.array([len(set(a) & set(b)) / 10 for a, b in zip(cpu, trt)])
print(f"{dtype}: top-10 overlap with the CPU engine over {len(overlap)} "
      f"users: mean {overlap.mean():.4f}, min {overlap.min():.2f}")
PYEOF
done

$PY -m tools.benchmark_serving --model_base_path="$WORK/models/trt_float16" \
  --concurrency=1,8,32 --plot="$WORK/serving_tensorrt_llm.png"
