#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/ and runs each for a while.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]
#
# Targets: safetensors (header parser), hf-index (shard index reader), gguf
# (header, metadata and tensor infos), delta (.delta reader and rebuild) and merge
# (the merge engine against its reference implementation, on random methods,
# parameters and shapes; built by SwiftPM as the MergeFuzz product). Seeds come
# from fixtures/; new corpus entries and crash reproducers go to .build-fuzz/
# (or $FUZZ_DIR).
# A crash, a leak, an allocation over 512 MB or an input taking more than
# 10 s fails the run (exit 1) and leaves the reproducer under .build-fuzz/NAME/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors hf-index gguf delta merge)

entry_of() {
    case "$1" in
        safetensors) echo Fuzz/SafetensorsHeader.swift ;;
        hf-index) echo Fuzz/HFIndex.swift ;;
        gguf) echo Fuzz/GGUFHeader.swift ;;
        delta) echo Fuzz/DeltaFile.swift ;;
        merge) echo Fuzz/Merge/MergeEngine.swift ;;
        *) echo "unknown fuzz target '$1'" >&2; exit 64 ;;
    esac
}
seeds_of() {
    case "$1" in
        safetensors) find fixtures -name '*.safetensors' -size -300k ;;
        hf-index) find fixtures -name '*.index.json' ;;
        gguf) find fixtures -name '*.gguf' -size -300k ;;
        delta) find fixtures -name '*.delta' -size -300k ;;
        merge) ;;
    esac
}

status=0
for target in "${targets[@]}"; do
    entry=$(entry_of "$target")
    if [ ! -f "$entry" ]; then
        echo "fuzz $target: no entry point ($entry), skipped" >&2
        continue
    fi
    work=${FUZZ_DIR:-.build-fuzz}/$target
    mkdir -p "$work/corpus" "$work/crashes"
    binary=$work/fuzz-$target
    if [ "$target" = merge ]; then
        # The engine needs the Merging module and its dependencies: SwiftPM builds them,
        # instrumented, with the entry point of Fuzz/Merge/ compiled for libFuzzer.
        echo "fuzz $target: building" >&2
        scratch=${FUZZ_DIR:-.build-fuzz}/spm
        if ! swift build -c release --product MergeFuzz --scratch-path "$scratch" \
            -Xswiftc -sanitize=fuzzer,address -Xswiftc -DCLAIRE_FUZZ >"$work/build.txt" 2>&1; then
            grep -E 'error' "$work/build.txt" >&2 || tail -20 "$work/build.txt" >&2
            echo "fuzz $target: build failed" >&2
            exit 1
        fi
        cp "$scratch/release/MergeFuzz" "$binary"
    elif [ ! -x "$binary" ] || [ -n "$(find Sources/Checkpoints "$entry" -newer "$binary" -name '*.swift' | head -1)" ]; then
        echo "fuzz $target: building" >&2
        # Checkpoints imports the zstd and OpenBLAS module maps; OpenBLAS's headers and
        # library sit where pkg-config says.
        swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name Checkpoints \
            -I Sources/CZstd -I Sources/COpenBLAS $(pkg-config --cflags-only-I openblas | sed 's/-I/-Xcc -I/g') \
            $(pkg-config --libs-only-L openblas) $(find Sources/Checkpoints -name '*.swift') "$entry" -o "$binary" 2>&1 | grep -v -E 'warning:|^\s*[0-9]* \||^\s*\|' >&2 || true
        [ -x "$binary" ] || { echo "fuzz $target: build failed" >&2; exit 1; }
    fi
    seeds=$work/seeds
    rm -rf "$seeds" && mkdir -p "$seeds"
    seeds_of "$target" | while read -r f; do cp "$f" "$seeds/"; done
    echo "fuzz $target: running for ${seconds}s" >&2
    if ! "$binary" "$work/corpus" "$seeds" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=512 -print_final_stats=1 -artifact_prefix="$work/crashes/" >"$work/log.txt" 2>&1; then
        echo "fuzz $target: FAILED — see $work/log.txt and $work/crashes/" >&2
        tail -40 "$work/log.txt" >&2
        status=1
    else
        runs=$(grep -E '^stat::number_of_executed_units' "$work/log.txt" | awk '{print $2}')
        echo "fuzz $target: ok, ${runs:-?} inputs, no crash" >&2
    fi
done
exit $status
