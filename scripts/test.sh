#!/usr/bin/env bash
# The whole test suite: unit and end-to-end tests, then a short run of every
# fuzz target (about 20 s each) that fails on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
swift test
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
