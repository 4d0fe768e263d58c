#!/usr/bin/env bash
# Train and test every model on MVTec AD bottle through the CLI (read from ../shared/data, never copied).
# Usage: [MODELS="padim vae"] bash bench/mvtec_all_models.sh [MVTEC_ROOT] [OUT]; prints one metrics line per model.
set -euo pipefail
ROOT=${1:-../shared/data/mvtec_ad}
OUT=${2:-bench/results/mvtec_models}
mkdir -p "$OUT"
run() {
  local model=$1; shift
  local t0=$SECONDS
  ad-core train --model "$model" --category MVTec_bottle --data_root "$ROOT" --models_root "$OUT" --image_size 256 --test "$@" \
    > "$OUT/$model.log" 2>&1
  local dir
  dir=$(tr '\r' '\n' < "$OUT/$model.log" | grep -o 'run directory: .*' | sed 's/^run directory: //')
  python - "$dir/test_result/metrics.json" "$model" "$((SECONDS - t0))" "$*" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<12} image AUROC {m['image_auroc']:.4f}  F1 {m['image_f1']:.4f}  pixel AUROC {m['pixel_auroc']:.4f}  "
      f"train+test {sys.argv[3]} s  flags: {sys.argv[4]}")
PY
}
declare -A FLAGS=(
  [patchcore]="--coreset_ratio 0.1"
  [padim]=""
  [vae]="--epochs 20"
  [efficientad]="--epochs 2 --distill_steps 100"
)
for model in ${MODELS:-patchcore padim vae efficientad}; do
  # shellcheck disable=SC2086
  run "$model" ${FLAGS[$model]}
done
