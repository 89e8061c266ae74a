#!/usr/bin/env bash
# Repeated code in the project's Python (dollar/, train/, benchmarks/, app.py, tests/): pylint's
# duplicate-code checker, 4 or more similar lines (comments, docstrings, imports and signatures
# do not count). Writes benchmarks/results/duplicates.txt (one entry a repeated block, with both
# places) and prints it; exits 1 when it found any, 2 when pylint is missing.
# Usage: pip install pylint && bash benchmarks/duplicates.sh   (about a minute of CPU time)
# It reads the files git tracks (their working-tree contents), so scratch files do not count.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${DUPLICATES_OUT:-$ROOT/benchmarks/results/duplicates.txt}"
cd "$ROOT"
if ! command -v pylint >/dev/null; then
  echo "error: pylint is not installed; run pip install pylint, then this script again." >&2
  exit 2
fi
mapfile -t FILES < <(git ls-files -- 'dollar/*.py' 'train/*.py' 'benchmarks/*.py' app.py 'tests/*.py')
mkdir -p "$(dirname "$OUT")"
set +e
pylint --disable=all --enable=duplicate-code --min-similarity-lines=4 --score=n "${FILES[@]}" >"$OUT.tmp" 2>&1
status=$?
set -e
# pylint's exit status is a bit mask: 8 = refactor messages (the duplicates), 1 = fatal, 32 = usage error
if (( status & 33 )); then
  cat "$OUT.tmp" >&2
  rm -f "$OUT.tmp"
  echo "error: pylint failed (exit status $status); see its message above." >&2
  exit 2
fi
count=$(grep -c "R0801" "$OUT.tmp" || true)
{
  echo "# bash benchmarks/duplicates.sh: pylint $(pylint --version | head -1 | cut -d' ' -f2), --min-similarity-lines=4, ${#FILES[@]} files"
  echo "# $count repeated block(s)"
  cat "$OUT.tmp"
} >"$OUT"
rm -f "$OUT.tmp"
cat "$OUT"
[ "$count" = 0 ]
