#!/usr/bin/env bash
# Measures fuse, stats and convert on Llama-shaped trios of growing size, from a cold
# page cache, against the disk's own sequential rates measured in the same run.
#
# usage: sudo bench/scale.sh [--work DIR] [--sizes "0.25 1 3"] [--tool PATH] [--keep]
#   --work DIR    models, outputs and logs (default /tmp/claire-scale). The 3 B trio
#                 takes about 18 GB, its merged output 6 GB more; each trio is deleted
#                 once measured unless --keep.
#   --sizes LIST  which trios, in billions of parameters: 0.25 (the shared bench shape),
#                 1 (2048 wide, 20 layers) and 3 (Llama-3.2-3B's layers, 32,000 tokens)
#   --tool PATH   the merge-tool binary (default: a release build of this checkout)
#   --keep        keep the generated trios (DIR/models-SIZE) for another run
#
# Every measured command starts with the page cache dropped (`echo 3 >
# /proc/sys/vm/drop_caches`, hence root), so each input is read from the disk. The
# disk's rates come from the best of two cold reads of the base model's shards and of three
# `fdatasync`ed `dd` writes of as many bytes as a merged model. "bound" is the time to read
# the command's inputs once and write its output once at those rates; "ratio" is wall
# time over bound. Rows are added to DIR/scale.tsv, one per size and command (delete it to
# start over); then
# `python3 bench/scale_plot.py DIR/scale.tsv bench/scale.svg` draws them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
work=/tmp/claire-scale
sizes="0.25 1 3"
tool=""
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --work) work="$2"; shift 2 ;;
        --sizes) sizes="$2"; shift 2 ;;
        --tool) tool="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done
[ -w /proc/sys/vm/drop_caches ] || { echo "error: needs root to drop the page cache" >&2; exit 1; }
make_models="${MAKE_MODELS:-$root/../shared/bench/make_models.py}"
if [ -z "$tool" ]; then
    (cd "$root" && swift build -c release --product merge-tool >/dev/null)
    tool="$root/.build/release/merge-tool"
fi
mkdir -p "$work"
table="$work/scale.tsv"
[ -s "$table" ] || printf 'size\tparams\tcommand\twall_s\tuser_s\tsys_s\tpeak_mb\tdisk_read_mb\tread_mb\twritten_mb\tdisk_read_mbs\tdisk_write_mbs\tbound_s\tratio\n' >"$table"

shape() {  # size -> make_models.py arguments
    case "$1" in
        0.25) echo "" ;;
        1) echo "--hidden 2048 --layers 20 --inter 5632 --heads 32 --kv-heads 8 --shards 4" ;;
        3) echo "--hidden 3072 --layers 28 --inter 8192 --heads 24 --kv-heads 8 --shards 8" ;;
        *) echo "error: unknown size $1 (0.25, 1 or 3)" >&2; exit 64 ;;
    esac
}

cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
mb() { du -sm --apparent-size "$@" | awk '{s += $1} END {print s}'; }

# Prints "wall user sys peakMB diskMB" from a /usr/bin/time -v log; diskMB is what the
# command read from the disk ("File system inputs", 512-byte blocks), which tells whether
# a pass over the inputs came from the page cache or the disk.
figures() {
    awk -F': ' '/Elapsed/ {split($2, t, ":"); wall = (length(t) == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2]}
                /User time/ {user = $2} /System time/ {sys = $2}
                /Maximum resident/ {rss = $2 / 1024}
                /File system inputs/ {disk = $2 * 512 / 1e6}
                END {printf "%.2f\t%.2f\t%.2f\t%.0f\t%.0f", wall, user, sys, rss, disk}' "$1"
}

for size in $sizes; do
    models="$work/models-$size"
    args="$(shape "$size")"
    [ -d "$models/base" ] || python3 "$make_models" "$models" $args >"$work/make-$size.log"
    params=$(awk '/params per model/ {print $4}' "$work/make-$size.log")
    model_mb=$(mb "$models"/base/*.safetensors)

    # Reads vary too (one cold read of the 3 B base once ran at half the usual rate): the best of two.
    read_s=""
    for _ in 1 2; do
        cold
        t=$( { /usr/bin/time -f %e cat "$models"/base/*.safetensors >/dev/null; } 2>&1 )
        read_s=$(awk -v a="${read_s:-$t}" -v b="$t" 'BEGIN {print (b < a) ? b : a}')
    done
    disk_read=$(awk -v m="$model_mb" -v s="$read_s" 'BEGIN {printf "%.0f", m / s}')
    # The virtual disk's write rate varies from one write to the next: the best of three.
    write_s=""
    for _ in 1 2 3; do
        rm -f "$work/ddwrite"
        t=$( { /usr/bin/time -f %e dd if=/dev/zero of="$work/ddwrite" bs=16M count=$(( (model_mb + 15) / 16 )) conv=fdatasync status=none; } 2>&1 )
        write_s=$(awk -v a="${write_s:-$t}" -v b="$t" 'BEGIN {print (b < a) ? b : a}')
    done
    rm -f "$work/ddwrite"
    disk_write=$(awk -v m="$model_mb" -v s="$write_s" 'BEGIN {printf "%.0f", m / s}')
    echo "size $size B ($params parameters, $model_mb MB per model): disk reads $disk_read MB/s, writes $disk_write MB/s"

    run() {  # label read_mb output command...
        local label="$1" read_mb="$2" out="$3"
        shift 3
        rm -rf "$out"
        cold
        /usr/bin/time -v "$@" >/dev/null 2>"$work/time-$size-$label.log" || { tail -3 "$work/time-$size-$label.log"; exit 1; }
        local written=0
        [ -e "$out" ] && written=$(mb "$out")
        local f bound ratio
        f=$(figures "$work/time-$size-$label.log")
        bound=$(awk -v r="$read_mb" -v w="$written" -v dr="$disk_read" -v dw="$disk_write" 'BEGIN {printf "%.2f", r / dr + w / dw}')
        ratio=$(awk -v b="$bound" -v t="$(cut -f1 <<<"$f")" 'BEGIN {printf "%.2f", t / b}')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$params" "$label" "$f" "$read_mb" "$written" "$disk_read" "$disk_write" "$bound" "$ratio" >>"$table"
        printf '  %-16s %s (bound %s s, ratio %s)\n' "$label" "$(cut -f1,4,5 <<<"$f" | awk '{printf "%6.1f s %6.0f MB, %6.0f MB from disk", $1, $2, $3}')" "$bound" "$ratio"
        rm -rf "$out"
    }
    for method in task_arithmetic ties dare_ties; do
        run "fuse-$method" $((3 * model_mb)) "$work/out" "$tool" fuse "$models/sft" "$models/dpo" --base "$models/base" \
            --method "$method" --weights 1,1 --density 0.3,1 --no-normalize -o "$work/out"
    done
    run stats $((3 * model_mb)) "$work/out" "$tool" stats "$models/sft" "$models/dpo" --base "$models/base"
    run convert-q8_0 "$model_mb" "$work/out.gguf" "$tool" convert "$models/base" "$work/out.gguf" --type q8_0
    [ "$keep" = 1 ] || rm -rf "$models"
done
echo "results: $table"
