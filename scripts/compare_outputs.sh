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
run() { merge "$1" "$2" "$2/sft" "$2/dpo" -- "${@:3}"; }
run1() { merge "$1" "$2" "$2/sft" -- "${@:3}"; }

merge() {
    local name=$1 trio=$2
    [[ -n ${ONLY:-} && ! $name =~ $ONLY ]] && return
    shift 2
    local models=()
    while [[ $1 != -- ]]; do models+=("$1"); shift; done
    shift
    local args=("${models[@]}" --base "$trio/base" "$@")
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

if [[ -d $bench/base ]]; then
    for method in ties dare_ties task_arithmetic della linear model_stock; do
        extra=(--density 0.3)
        [[ $method == linear || $method == model_stock ]] && extra=()
        run "bench $method" "$bench" --method "$method" "${extra[@]}"
    done
    run1 "bench slerp" "$bench" --method slerp --t 0.4
    run "bench ties trim global" "$bench" --method ties --density 0.3 --trim global
    run "bench dare_ties inverse threads 1" "$bench" --method dare_ties --density 0.3 --rescale inverse --threads 1
fi

echo "$cases cases, $failures differ"
[[ $failures == 0 ]]
