#!/usr/bin/env bash
# The whole test suite: unit and end-to-end tests, the same tests again built with
# AddressSanitizer (every target, the merge-tool binary the end-to-end tests run
# included), then a short run of every fuzz target (about 20 s each) that fails on
# any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
swift test
echo "tests under AddressSanitizer" >&2
# Leak checking is off: the runtime's own test harness and Foundation's Process
# leave small allocations at exit; out-of-bounds access and use after free stop
# the run.
ASAN_OPTIONS=detect_leaks=0 swift test --sanitize=address --scratch-path .build-asan
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
