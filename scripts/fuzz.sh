#!/usr/bin/env bash
# Runs every Go fuzz target in the module for the given time each.
# Usage: scripts/fuzz.sh [30s]
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-10s}"
grep -rl --include='*_test.go' '^func Fuzz' core plugins cmd proto 2>/dev/null | xargs -n1 dirname | sort -u | while read -r dir; do
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //'); do
    echo "== $dir $target ($fuzztime)"
    go test "./$dir" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime"
  done
done
