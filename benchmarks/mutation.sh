#!/usr/bin/env bash
# Mutation testing of the method core (dollar/losses.py, schedule.py, sampling.py, denoiser.py) with
# mutmut, configured in pyproject.toml [tool.mutmut] (files, the fast test selection); writes
# benchmarks/results/mutation.json (counts, score, every survivor with file, line, mutation and,
# for those judged harmless, why: benchmarks/mutation_report.py).
# It runs in a scratch copy of the working tree, so mutants/ never lands in the repository.
# Usage: bash benchmarks/mutation.sh   (MUTMUT_JOBS=N workers, default 2: about 30-40 min on 2 busy cores)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${MUTATION_WORKDIR:-$(mktemp -d)}"
OUT="${MUTATION_OUT:-$ROOT/benchmarks/results/mutation.json}"
mkdir -p "$WORK" "$(dirname "$OUT")"
(cd "$ROOT" && tar --exclude=__pycache__ -cf - dollar tests pyproject.toml) | tar -xf - -C "$WORK"
cd "$WORK"
rm -rf mutants
echo "mutmut in $WORK (log: $WORK/mutmut.log)"
if ! nice -n 10 mutmut run --max-children "${MUTMUT_JOBS:-2}" >mutmut.log 2>&1; then
  tail -c 3000 mutmut.log
  exit 1
fi
python "$ROOT/benchmarks/mutation_report.py" --out "$OUT"
