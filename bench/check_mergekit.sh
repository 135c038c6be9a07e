#!/usr/bin/env bash
# Numeric agreement with mergekit: merges a small Llama-shaped trio with both tools
# and compares the outputs in BF16 rounding steps (bench/compare_outputs.py).
#
# usage: bench/check_mergekit.sh [WORKDIR]   (needs mergekit-yaml on PATH or MERGEKIT=...)
#
# Inputs are Float32 so that magnitude ties (which mergekit breaks in an unspecified
# order, Claire by index) do not occur; outputs are BF16 computed in Float32 by both.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
work="${1:-/tmp/claire-check}"
mergekit="${MERGEKIT:-$(command -v mergekit-yaml || true)}"
[ -n "$mergekit" ] || { echo "mergekit-yaml not found (pip install mergekit, or set MERGEKIT)"; exit 2; }
tool="$root/.build/release/merge-tool"
[ -x "$tool" ] || (cd "$root" && swift build -c release --product merge-tool >/dev/null)
mkdir -p "$work"
[ -d "$work/models/base" ] || python3 "${MAKE_MODELS:-$root/../shared/bench/make_models.py}" "$work/models" \
    --hidden 128 --layers 3 --vocab 512 --inter 256 --dtype f32 >/dev/null
m="$work/models"
recipe() {  # method, parameters block, model parameters
    cat <<YAML
merge_method: $1
base_model: $m/base
models:
  - model: $m/sft
    parameters: {weight: 1, density: 0.3$3}
  - model: $m/dpo
    parameters: {weight: 0.7, density: 1.0$3}
parameters: {$2}
dtype: float32
out_dtype: bfloat16
YAML
}
status=0
for method in task_arithmetic ties linear breadcrumbs slerp model_stock; do
    case $method in
        ties) recipe ties "normalize: true" "" ;;
        breadcrumbs) recipe breadcrumbs "normalize: false" ", gamma: 0.05" ;;
        task_arithmetic) recipe task_arithmetic "lambda: 0.9" "" ;;
        linear) printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: 0.6}\n  - model: %s\n    parameters: {weight: 0.4}\ndtype: float32\nout_dtype: bfloat16\n' "$m/sft" "$m/dpo" ;;
        slerp) printf 'merge_method: slerp\nbase_model: %s\nmodels:\n  - model: %s\n  - model: %s\nparameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3]\n    - value: 0.4\ndtype: float32\nout_dtype: bfloat16\n' "$m/base" "$m/base" "$m/sft" ;;
        model_stock) printf 'merge_method: model_stock\nbase_model: %s\nmodels:\n  - model: %s\n  - model: %s\ndtype: float32\nout_dtype: bfloat16\n' "$m/base" "$m/sft" "$m/dpo" ;;
    esac > "$work/$method.yml"
    rm -rf "$work/mk-$method" "$work/cl-$method"
    "$mergekit" "$work/$method.yml" "$work/mk-$method" >"$work/mk-$method.log" 2>&1
    "$tool" fuse --config "$work/$method.yml" -o "$work/cl-$method"
    printf '%-16s ' "$method"
    if [ "$method" = slerp ]; then
        # Where rows nearly cancel, float32 rounding moves the result by many BF16
        # steps; the verdict is agreement with the exact result (bench/slerp_exact.py).
        python3 "$here/compare_outputs.py" "$work/cl-$method" "$work/mk-$method" || true
        python3 "$here/slerp_exact.py" "$work" || status=1
    else
        python3 "$here/compare_outputs.py" "$work/cl-$method" "$work/mk-$method" || status=1
    fi
done
exit $status
