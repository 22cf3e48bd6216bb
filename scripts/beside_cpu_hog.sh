#!/usr/bin/env bash
# Runs one test file N times beside a CPU hog (one busy loop per core), one summary line per run:
# the check that a timing-sensitive ROS test does not flake on a loaded machine.
#   usage: bash scripts/beside_cpu_hog.sh N TESTFILE [LOG]    (run it with nothing else running)
# A failed run's whole pytest output goes to LOG.failK.
set -u
n=${1:?runs}
test=${2:?test file}
log=${3:-/dev/stdout}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
hogs=()
for _ in $(seq "$(nproc)"); do (while :; do :; done) & hogs+=($!); done
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
passed=0
for i in $(seq "$n"); do
  start=$(date +%s)
  out=$(timeout 900 bash scripts/run_tests.sh "$test" -q -p no:cacheprovider 2>&1)
  code=$?
  echo "run $i: exit $code, $(($(date +%s) - start)) s: $(echo "$out" | tail -1)" >>"$log"
  if [[ $code -eq 0 ]]; then passed=$((passed + 1)); elif [[ $log != /dev/stdout ]]; then echo "$out" >"$log.fail$i"; fi
done
echo "$test: $passed of $n runs passed beside $(nproc) busy loops" >>"$log"
