#!/usr/bin/env bash
# Runs `stats` with two merge-tool binaries and compares their output byte for byte:
# the text for each --by grouping, --json and --plot, on each trio given, on the
# trio's dpo model converted to a Q8_0 GGUF file (read against the Hugging Face base,
# with the quantization-aware and the naive delta), and on the LoRA adapter fixtures.
#
#   scripts/compare_stats.sh OLD_BINARY NEW_BINARY TRIO...
#
# Each TRIO is a folder holding base/, sft/ and dpo/ model folders.
# Prints one line per case and exits 1 when any output differs.
# ONLY=REGEX runs only the cases whose name matches.
set -uo pipefail

usage="usage: compare_stats.sh OLD_BINARY NEW_BINARY TRIO..."
old=${1:?$usage}
new=${2:?$usage}
shift 2
[[ $# -gt 0 ]] || { echo "$usage" >&2; exit 2; }
fixtures=$(cd "$(dirname "$0")/../fixtures" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cases=0
failures=0

# compare NAME ARGS...: `stats ARGS` as text by kind, tensor and layer, as JSON and as
# a plot, with both binaries.
compare() {
    local name=$1
    shift
    [[ -n ${ONLY:-} && ! $name =~ $ONLY ]] && return
    local variant differing=()
    for variant in kind tensor layer json plot; do
        local extra=()
        case $variant in
            json) extra=(--json) ;;
            plot) extra=(--plot "$work/plot.svg") ;;
            *) extra=(--by "$variant") ;;
        esac
        local binary side
        for side in old new; do
            [[ $side == old ]] && binary=$old || binary=$new
            rm -f "$work/plot.svg"
            "$binary" stats "$@" "${extra[@]}" >"$work/$side.out" 2>&1
            echo "exit $?" >>"$work/$side.out"
            [[ $variant == plot ]] && cat "$work/plot.svg" >>"$work/$side.out" 2>/dev/null
        done
        cmp -s "$work/old.out" "$work/new.out" || differing+=("$variant")
    done
    cases=$((cases + 1))
    if [[ ${#differing[@]} == 0 ]]; then
        echo "same  $name"
    else
        echo "DIFF  $name: ${differing[*]}"
        failures=$((failures + 1))
    fi
}

for trio in "$@"; do
    label=$(basename "$trio")
    compare "$label" "$trio/sft" "$trio/dpo" --base "$trio/base"
    compare "$label-one" "$trio/dpo" --base "$trio/base"
    if [[ -z ${ONLY:-} || "$label-q8_0" =~ $ONLY ]]; then
        gguf="$work/$label-dpo-q8_0.gguf"
        "$old" convert "$trio/dpo" "$gguf" --type q8_0 >/dev/null 2>&1 || echo "cannot convert $trio/dpo"
        compare "$label-q8_0" "$trio/sft" "$gguf" --base "$trio/base"
        compare "$label-q8_0-naive" "$gguf" --base "$trio/base" --quantized-delta naive
        rm -f "$gguf"
    fi
done
compare lora "$fixtures/lora/sft-lora" "$fixtures/lora/dpo-lora" --base "$fixtures/merge/base"
compare lora-and-model "$fixtures/lora/sft-lora" "$fixtures/merge/dpo" --base "$fixtures/merge/base" --thresholds 0,1e-3,1e-2,0.1,1 --density 0.3
compare three "$fixtures/merge/sft" "$fixtures/merge/dpo" "$fixtures/merge/far" --base "$fixtures/merge/base"

echo "$cases cases, $failures differing"
[[ $failures == 0 ]]
