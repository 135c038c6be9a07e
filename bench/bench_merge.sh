#!/usr/bin/env bash
# Times `merge-tool fuse` on the shared PAFT workload (Llama-shaped, 254 M parameters
# per model, BF16, base/sft/dpo in two shards each) and reports wall time, CPU time and
# peak resident memory from /usr/bin/time -v; with mergekit installed, runs the same
# recipes through mergekit-yaml for the side-by-side.
#
# usage: bench/bench_merge.sh [--work DIR] [--out DIR] [--methods "ties dare_ties task_arithmetic"]
#                             [--no-mergekit] [--layers-check]
#   --work DIR      workload and logs (default /tmp/claire-bench; ~1.5 GB, never in the repo)
#   --out DIR       where merged models are written (default DIR/out; a tmpfs such as
#                   /dev/shm leaves out the disk flush at the end)
#   --layers-check  also merge 4- and 16-layer variants to show peak memory does not
#                   grow with depth
# Recipe (as the issue states it): sft weight 1 density 0.3, dpo weight 1 density 1.0,
# normalize false; mergekit computes in float32 and writes bfloat16 like Claire.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
work=/tmp/claire-bench
out=""
methods="ties dare_ties task_arithmetic"
use_mergekit=1
layers_check=0
while [ $# -gt 0 ]; do
    case "$1" in
        --work) work="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --methods) methods="$2"; shift 2 ;;
        --no-mergekit) use_mergekit=0; shift ;;
        --layers-check) layers_check=1; shift ;;
        *) echo "unknown option $1"; exit 64 ;;
    esac
done
out="${out:-$work/out}"
mkdir -p "$work" "$out"
make_models="${MAKE_MODELS:-$root/../shared/bench/make_models.py}"
[ -d "$work/models/base" ] || python3 "$make_models" "$work/models" >/dev/null
(cd "$root" && swift build -c release --product merge-tool >/dev/null)
tool="$root/.build/release/merge-tool"
mergekit="${MERGEKIT:-$(command -v mergekit-yaml || true)}"
[ "$use_mergekit" = 1 ] && [ -n "$mergekit" ] || mergekit=""

# Prints "wall user sys peakMB" from a /usr/bin/time -v log.
figures() {
    awk -F': ' '/Elapsed/ {split($2, t, ":"); wall = (length(t) == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2]}
                /User time/ {user = $2} /System time/ {sys = $2}
                /Maximum resident/ {rss = $2 / 1024}
                END {printf "%7.2f s %7.2f s %7.2f s %7.0f MB", wall, user, sys, rss}' "$1"
}

run_claire() {  # method models-dir label
    local m="$2"
    rm -rf "$out/claire-$1"
    /usr/bin/time -v "$tool" fuse "$m/sft" "$m/dpo" --base "$m/base" --method "$1" \
        --weights 1,1 --density 0.3,1 --no-normalize -o "$out/claire-$1" 2>"$work/time-claire-$1-$3.log" >/dev/null
    printf '%-16s %-9s %s\n' "$1" "claire$4" "$(figures "$work/time-claire-$1-$3.log")"
}

run_mergekit() {  # method
    local m="$work/models"
    cat >"$work/$1.yml" <<YAML
merge_method: $1
base_model: $m/base
models:
  - model: $m/sft
    parameters: {weight: 1, density: 0.3}
  - model: $m/dpo
    parameters: {weight: 1, density: 1.0}
parameters: {normalize: false}
dtype: float32
out_dtype: bfloat16
YAML
    rm -rf "$out/mergekit-$1"
    /usr/bin/time -v "$mergekit" "$work/$1.yml" "$out/mergekit-$1" 2>"$work/time-mergekit-$1.log" >/dev/null
    printf '%-16s %-9s %s\n' "$1" mergekit "$(figures "$work/time-mergekit-$1.log")"
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-16s %-9s %9s %9s %9s %10s\n' method tool wall user sys "peak RSS"
for method in $methods; do
    run_claire "$method" "$work/models" main ""
    [ -n "$mergekit" ] && run_mergekit "$method"
    if [ -n "$mergekit" ] && [ "$method" != dare_ties ]; then
        printf '%-16s %-9s ' "$method" agree
        trim=""
        [ "$method" = ties ] && trim="--trim-base $work/models/base --trim-model $work/models/sft --density 0.3"
        python3 "$here/compare_outputs.py" "$out/claire-$method" "$out/mergekit-$method" $trim || true
    fi
    rm -rf "$out/claire-$method" "$out/mergekit-$method"
done
if [ "$layers_check" = 1 ]; then
    for layers in 4 16; do
        d="$work/models-$layers"
        [ -d "$d/base" ] || python3 "$make_models" "$d" --layers "$layers" >/dev/null
        run_claire ties "$d" "layers$layers" " L=$layers"
        rm -rf "$out/claire-ties"
    done
fi
