#!/usr/bin/env bash
# Instructions per operation for the latency cases, with valgrind's
# callgrind (counts instructions, not time: repeatable on a noisy machine).
# Each case runs N1 and N2 operations; (Ir(N2) - Ir(N1)) / (N2 - N1) cancels
# start-up (runtime, libpython initialization, thread creation).
#
#   bash bench/callgrind.sh            # all cases, the designs on the model
#   bash bench/callgrind.sh ensure-A   # some
#   TSTATE_BACKEND=cpython bash bench/callgrind.sh   # the designs on CPython 3.11
# (TSTATE_BACKEND=cpython makes every facade use the linked libpython 3.11
# or fail: it never falls back to the model.)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 1; }
cargo build --release -q -p tstate-bench
bin=target/release/tstate-bench
n1=100000
n2=200000
# CPython's start-up depends on its random hash seed; fix it so the
# difference measures only the operations.
export PYTHONHASHSEED=0
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
    cases=(baseline-mutex baseline-tls baseline-cas
           ensure-A ensure-B ensure-C handle-A handle-B handle-C
           activate-A activate-B activate-C guard-A guard-B guard-C guard-V
           ensure-A-inline ensure-A-inline-dl ensure-A-inline-ie
           handle-A-inline handle-A-inline-dl handle-A-inline-ie
           activate-A-inline activate-A-inline-dl activate-A-inline-ie
           guard-A-inline guard-A-inline-dl guard-A-inline-ie
           cpython-A cpython-B cpython-C cpython-D cpython-save)
    # a thread that uses 1,000 interpreters: model only (1,000 CPython
    # subinterpreters under valgrind take too long)
    if [ "${TSTATE_BACKEND:-model}" = model ]; then
        cases+=(ensure-A1000 ensure-B1000 ensure-C1000 handle-A1000 handle-B1000 handle-C1000)
    fi
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'designs on the %s backend\n\n' "${TSTATE_BACKEND:-model}"
printf '| case | instructions per operation |\n|---|--:|\n'
for c in "${cases[@]}"; do
    ir=()
    for n in $n1 $n2; do
        if ! valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" --count "$c" "$n" \
            >"$tmp/log" 2>&1; then
            ir=(); break
        fi
        ir+=("$(grep -E '^summary:|^totals:' "$tmp/out" | head -1 | awk '{print $2}')")
    done
    if [ ${#ir[@]} -eq 2 ]; then
        awk -v c="$c" -v a="${ir[0]}" -v b="${ir[1]}" -v d=$((n2 - n1)) \
            'BEGIN { printf "| %s | %.1f |\n", c, (b - a) / d }'
    else
        printf '| %s | skipped (%s) |\n' "$c" "$(tail -1 "$tmp/log")"
    fi
done
