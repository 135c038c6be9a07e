#!/usr/bin/env bash
# Runs one `fuse` as N local processes, as a Slurm job array or a Kubernetes
# Indexed Job runs it on N machines: each process writes one slice of the output
# folder (`--shard I/N`), and once all have finished, `--shard finish` checks them
# and writes the index and side files.
#
#   scripts/shard_local.sh N FUSE_ARGS...      e.g.
#   scripts/shard_local.sh 3 sft/ dpo/ --base base/ --method ties -o out/
#
# MERGE_TOOL names the binary (default: merge-tool on PATH). Exits with the first
# failing slice's status (without running finish), else with finish's.
set -uo pipefail

usage="usage: shard_local.sh N FUSE_ARGS..."
count=${1:?$usage}
shift
[[ $count =~ ^[1-9][0-9]*$ ]] || { echo "$usage (N is a positive count)" >&2; exit 64; }
[[ $# -gt 0 ]] || { echo "$usage" >&2; exit 64; }
tool=${MERGE_TOOL:-merge-tool}

pids=()
for ((index = 0; index < count; index++)); do
    "$tool" fuse "$@" --shard "$index/$count" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || { code=$?; [[ $status -ne 0 ]] || status=$code; }
done
[[ $status -eq 0 ]] || exit "$status"
exec "$tool" fuse "$@" --shard finish
