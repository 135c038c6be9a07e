#!/usr/bin/env bash
# Runs `fuse` for every merge method and the notable options with two merge-tool
# binaries and compares every output file byte for byte.
#
#   scripts/compare_outputs.sh OLD_BINARY NEW_BINARY SMALL_TRIO [BENCH_TRIO]
#
# SMALL_TRIO and BENCH_TRIO are folders holding base/, sft/ and dpo/ model folders
# (such as the bench trio described in bench/README.md; the bench cases are skipped
# without one).
# Prints one line per case, naming the files that differ, and exits 1 when any
# output differs. ONLY=REGEX runs only the cases whose name matches.
set -uo pipefail

usage="usage: compare_outputs.sh OLD_BINARY NEW_BINARY SMALL_TRIO [BENCH_TRIO]"
old=${1:?$usage}
new=${2:?$usage}
small=${3:?$usage}
bench=${4:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cases=0
failures=0

# run NAME TRIO ARGS...: fuse sft and dpo onto base with both binaries, then cmp
# every file; `run1` merges sft alone (slerp takes one model besides the base).
# recipe NAME YAML: the same for `fuse --config` with the recipe text YAML, in which
# TRIO stands for the small trio's folder and BENCH for the bench trio's.
run() { merge "$1" "$2/sft" "$2/dpo" --base "$2/base" "${@:3}"; }
run1() { merge "$1" "$2/sft" --base "$2/base" "${@:3}"; }
recipe() {
    [[ -n ${ONLY:-} && ! $1 =~ $ONLY ]] && return
    local file="$work/recipe-$((cases + 1)).yml"
    local text=${2//TRIO/$small}
    printf '%s\n' "${text//BENCH/$bench}" >"$file"
    merge "$1" --config "$file"
}

# merge NAME ARGS...: one case, `fuse ARGS -o OUT` with each binary.
merge() {
    local name=$1
    [[ -n ${ONLY:-} && ! $name =~ $ONLY ]] && return
    shift
    local args=("$@")
    local out_old="$work/old" out_new="$work/new"
    local suffix=""
    for a in "$@"; do [[ $a == gguf ]] && suffix=.gguf; done
    rm -rf "$out_old" "$out_new" "$out_old.gguf" "$out_new.gguf"
    cases=$((cases + 1))
    if ! "$old" fuse "${args[@]}" -o "$out_old$suffix" >"$work/old.log" 2>&1; then
        # Both must fail alike: the same message, no output.
        if "$new" fuse "${args[@]}" -o "$out_new$suffix" >"$work/new.log" 2>&1; then
            echo "DIFF  $name: the old binary failed, the new one did not"; failures=$((failures + 1)); return
        fi
        if cmp -s <(sed "s#$out_old#OUT#g" "$work/old.log") <(sed "s#$out_new#OUT#g" "$work/new.log"); then
            echo "same  $name (both refuse: $(tail -1 "$work/old.log"))"
        else
            echo "DIFF  $name: different errors"; failures=$((failures + 1))
        fi
        return
    fi
    if ! "$new" fuse "${args[@]}" -o "$out_new$suffix" >"$work/new.log" 2>&1; then
        echo "DIFF  $name: the new binary failed: $(tail -1 "$work/new.log")"; failures=$((failures + 1)); return
    fi
    local a b differ=0 files=0 differing=()
    if [[ -n $suffix ]]; then
        files=1
        cmp -s "$out_old$suffix" "$out_new$suffix" || differ=1
    else
        # Same file list, then the same bytes in each file (the model card names the
        # output folder, which differs between the two runs).
        if [[ $(cd "$out_old" && find . -type f | sort) != $(cd "$out_new" && find . -type f | sort) ]]; then
            differ=1
        fi
        while IFS= read -r a; do
            files=$((files + 1))
            b="$out_new/${a#"$out_old"/}"
            if [[ $a == */README.md ]]; then
                cmp -s <(sed "s#$out_old#OUT#g" "$a") <(sed "s#$out_new#OUT#g" "$b") || { differ=1; differing+=("${a##*/}"); }
            else
                cmp -s "$a" "$b" || { differ=1; differing+=("${a##*/}"); }
            fi
        done < <(find "$out_old" -type f)
    fi
    if [[ $differ == 0 ]]; then
        echo "same  $name ($files files)"
    else
        echo "DIFF  $name: ${differing[*]:-file lists}"; failures=$((failures + 1))
    fi
}

for threads in 1 2; do
    t=(--threads "$threads")
    for method in ties dare_ties dare_linear breadcrumbs breadcrumbs_ties della della_linear task_arithmetic; do
        for density in 0.3 1.0; do
            run "$method density $density threads $threads" "$small" --method "$method" --density "$density" "${t[@]}"
        done
    done
    run "linear threads $threads" "$small" --method linear --weights 0.7,0.3 "${t[@]}"
    run "linear no-normalize threads $threads" "$small" --method linear --weights 0.7,0.5 --no-normalize "${t[@]}"
    run1 "slerp threads $threads" "$small" --method slerp --t 0.3 "${t[@]}"
    run "model_stock threads $threads" "$small" --method model_stock "${t[@]}"
    run "model_stock filter_wise threads $threads" "$small" --method model_stock --filter-wise "${t[@]}"
    run "ties trim global threads $threads" "$small" --method ties --density 0.3,0.5 --trim global "${t[@]}"
done
run "ties weights density lambda" "$small" --method ties --weights 0.6,0.9 --density 0.3,0.7 --lambda 1.3
run "ties consensus count" "$small" --method ties --density 0.3 --consensus count
run "ties normalize off" "$small" --method ties --density 0.3 --no-normalize
run "task_arithmetic normalize" "$small" --method task_arithmetic --normalize --weights 0.4,0.8
run "dare_ties rescale l1 seed 7" "$small" --method dare_ties --density 0.3 --rescale l1 --seed 7
run "dare_ties rescale inverse" "$small" --method dare_ties --density 0.3 --rescale inverse
run "dare_linear rescale none" "$small" --method dare_linear --density 0.3 --rescale none
run "della rescale inverse epsilon" "$small" --method della --density 0.4 --epsilon 0.1 --rescale inverse
run "della_linear consensus count" "$small" --method della_linear --density 0.4 --consensus count
run "breadcrumbs gamma" "$small" --method breadcrumbs --density 0.5 --gamma 0.05 --rescale l1
run "breadcrumbs_ties rescale inverse" "$small" --method breadcrumbs_ties --density 0.5 --rescale inverse
for dtype in bf16 f16 f32; do
    run "ties dtype $dtype" "$small" --method ties --density 0.3 --dtype "$dtype"
    run "dare_ties dtype $dtype" "$small" --method dare_ties --density 0.3 --dtype "$dtype"
done
run "ties gguf f16" "$small" --method ties --density 0.3 --format gguf
run "ties gguf q8_0" "$small" --method ties --density 0.3 --format gguf --type q8_0
run1 "slerp gguf bf16" "$small" --method slerp --t 0.6 --format gguf --type bf16
run "ties small shards" "$small" --method ties --density 0.3 --max-shard-size 5MB

# The methods of mergekit 0.1.5 beyond the task-vector family, then recipes.
for threads in 1 2; do
    t=(--threads "$threads")
    run "sce threads $threads" "$small" --method sce "${t[@]}"
    run "sce select_topk threads $threads" "$small" --method sce --select-topk 0.3 "${t[@]}"
    run1 "nearswap threads $threads" "$small" --method nearswap --t 0.001 "${t[@]}"
    run1 "arcee_fusion threads $threads" "$small" --method arcee_fusion "${t[@]}"
    run "ram threads $threads" "$small" --method ram "${t[@]}"
    run "ram epsilon threads $threads" "$small" --method ram --epsilon 0.001 "${t[@]}"
    run "ramplus_tl threads $threads" "$small" --method ramplus_tl "${t[@]}"
    run "nuslerp threads $threads" "$small" --method nuslerp --weights 0.3,0.7 "${t[@]}"
    run "multislerp threads $threads" "$small" --method multislerp --weights 0.3,0.7 "${t[@]}"
    run "karcher threads $threads" "$small" --method karcher "${t[@]}"
    merge "karcher no base threads $threads" "$small/sft" "$small/dpo" --method karcher "${t[@]}"
    merge "passthrough threads $threads" "$small/sft" --method passthrough "${t[@]}"
done
run1 "nearswap dtype f32" "$small" --method nearswap --t 0.01 --dtype f32
run "multislerp dtype f16" "$small" --method multislerp --weights 1,2 --dtype f16
run "sce gguf q8_0" "$small" --method sce --select-topk 0.5 --format gguf --type q8_0
recipe "recipe nuslerp no base" "merge_method: nuslerp
models:
  - {model: TRIO/sft, parameters: {weight: 0.4}}
  - {model: TRIO/dpo, parameters: {weight: 0.6}}
dtype: bfloat16"
recipe "recipe nuslerp rows no base" "merge_method: nuslerp
models:
  - {model: TRIO/sft, parameters: {weight: 0.4}}
  - {model: TRIO/dpo, parameters: {weight: 0.6}}
parameters: {nuslerp_flatten: false}"
recipe "recipe nuslerp row_wise base" "merge_method: nuslerp
base_model: TRIO/base
models:
  - {model: TRIO/sft, parameters: {weight: 0.4}}
  - {model: TRIO/dpo, parameters: {weight: [0.2, 0.8]}}
parameters: {nuslerp_flatten: false, nuslerp_row_wise: true}"
recipe "recipe nuslerp row_wise base f32" "merge_method: nuslerp
base_model: TRIO/base
models:
  - {model: TRIO/sft, parameters: {weight: 0.4}}
  - {model: TRIO/dpo, parameters: {weight: 0.6}}
parameters: {nuslerp_flatten: false, nuslerp_row_wise: true}
dtype: float32"
recipe "recipe multislerp no base eps" "merge_method: multislerp
models:
  - {model: TRIO/base, parameters: {weight: 1.0}}
  - {model: TRIO/sft, parameters: {weight: 0.5}}
  - {model: TRIO/dpo, parameters: {weight: [0.1, 0.9]}}
parameters: {normalize_weights: false, eps: 1.0e-6}"
recipe "recipe karcher base max_iter tol" "merge_method: karcher
base_model: TRIO/base
models:
  - {model: TRIO/sft}
  - {model: TRIO/dpo}
parameters: {max_iter: 3, tol: 1.0e-7}"
recipe "recipe ramplus_tl r alpha" "merge_method: ramplus_tl
base_model: TRIO/base
models:
  - {model: TRIO/sft}
  - {model: TRIO/dpo}
parameters: {epsilon: 0.0001, r: 0.5, alpha: 0.4}"
recipe "recipe sce select_topk per filter" "merge_method: sce
base_model: TRIO/base
models:
  - {model: TRIO/sft}
  - {model: TRIO/dpo}
parameters:
  select_topk:
    - {filter: mlp, value: 0.2}
    - {value: 0.6}"
recipe "recipe ties per-model density weight" "merge_method: ties
base_model: TRIO/base
models:
  - model: TRIO/sft
    parameters:
      density: [0.2, 0.6]
      weight: [{filter: self_attn, value: 0.8}, {value: 0.4}]
  - {model: TRIO/dpo, parameters: {density: 0.5, weight: 0.6}}
parameters: {normalize: false, lambda: 1.2}
dtype: bfloat16"
recipe "recipe dare_linear f32 seed" "merge_method: dare_linear
base_model: TRIO/base
models:
  - {model: TRIO/sft, parameters: {density: 0.4, weight: 0.5}}
  - {model: TRIO/dpo, parameters: {density: 0.7, weight: 0.5}}
dtype: float32
seed: 11"
recipe "recipe slerp gradient t" "merge_method: slerp
base_model: TRIO/base
models:
  - {model: TRIO/base}
  - {model: TRIO/sft}
parameters:
  t: [{filter: self_attn, value: [0, 0.5, 1]}, {filter: mlp, value: [1, 0.5, 0]}, {value: 0.5}]
dtype: bfloat16"
recipe "recipe model_stock bf16" "merge_method: model_stock
base_model: TRIO/base
models: [{model: TRIO/sft}, {model: TRIO/dpo}]
dtype: bfloat16"
recipe "recipe model_stock filter_wise f16" "merge_method: model_stock
base_model: TRIO/base
models: [{model: TRIO/sft}, {model: TRIO/dpo}]
parameters: {filter_wise: true}
dtype: float16"
recipe "recipe passthrough slices scale" "merge_method: passthrough
base_model: TRIO/base
slices:
  - sources:
      - {model: TRIO/base, layer_range: [0, 2]}
  - sources:
      - model: TRIO/sft
        layer_range: [1, 3]
        parameters:
          scale: [{filter: o_proj, value: 0.5}, {filter: down_proj, value: 0.5}, {value: 1.0}]
dtype: bfloat16"
recipe "recipe slices nuslerp" "merge_method: nuslerp
base_model: TRIO/base
slices:
  - sources:
      - {model: TRIO/base, layer_range: [0, 3]}
      - {model: TRIO/sft, layer_range: [0, 3], parameters: {weight: 0.3}}
      - {model: TRIO/dpo, layer_range: [0, 3], parameters: {weight: 0.7}}
  - sources:
      - {model: TRIO/base, layer_range: [2, 3]}
      - {model: TRIO/sft, layer_range: [2, 3], parameters: {weight: 0.5}}
      - {model: TRIO/dpo, layer_range: [2, 3], parameters: {weight: 0.5}}"
recipe "recipe slices linear" "merge_method: linear
slices:
  - sources:
      - {model: TRIO/sft, layer_range: [0, 2], parameters: {weight: 0.3}}
      - {model: TRIO/dpo, layer_range: [1, 3], parameters: {weight: 0.7}}
dtype: float16"

if [[ -d $bench/base ]]; then
    for method in ties dare_ties task_arithmetic della linear model_stock; do
        extra=(--density 0.3)
        [[ $method == linear || $method == model_stock ]] && extra=()
        run "bench $method" "$bench" --method "$method" "${extra[@]}"
    done
    run1 "bench slerp" "$bench" --method slerp --t 0.4
    run "bench ties trim global" "$bench" --method ties --density 0.3 --trim global
    run "bench dare_ties inverse threads 1" "$bench" --method dare_ties --density 0.3 --rescale inverse --threads 1
    run "bench sce select_topk" "$bench" --method sce --select-topk 0.3
    run "bench ramplus_tl" "$bench" --method ramplus_tl
    run "bench multislerp" "$bench" --method multislerp --weights 0.4,0.6
    recipe "bench nuslerp row_wise" "merge_method: nuslerp
base_model: BENCH/base
models:
  - {model: BENCH/sft, parameters: {weight: 0.4}}
  - {model: BENCH/dpo, parameters: {weight: 0.6}}
parameters: {nuslerp_flatten: false, nuslerp_row_wise: true}"
fi

echo "$cases cases, $failures differ"
[[ $failures == 0 ]]
