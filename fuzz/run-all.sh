#!/usr/bin/env bash
# Builds every fuzz target and runs each for N seconds (first argument,
# default 30), on stable Rust: no sanitizer (`-s none`), so no nightly.
# New inputs a run finds go to a scratch corpus (FUZZ_WORK, default a
# fresh temporary directory), never into the committed seeds; a crash is
# saved in fuzz/artifacts/<target>/ by cargo-fuzz. Prints, per target, the
# executions libFuzzer counted and its rate; exits non-zero if any target
# crashed (a panic, a failed property, a timeout or running out of memory).
#
#   fuzz/run-all.sh          # 30 s per target
#   fuzz/run-all.sh 600      # 10 min per target
#   FUZZ_TARGETS="frame config" fuzz/run-all.sh 60
set -euo pipefail

seconds="${1:-30}"
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

build_start=$SECONDS
cargo fuzz build -s none
echo "built every target in $((SECONDS - build_start)) s"

work="${FUZZ_WORK:-$(mktemp -d -t carrier-fuzz.XXXXXX)}"
mkdir -p "$work"
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
failed=()
printf '%-20s %-7s %12s %8s\n' target result executions exec/s
for target in $targets; do
    mkdir -p "$work/$target"
    corpora=("$work/$target")
    [[ -d "corpus/$target" ]] && corpora+=("corpus/$target")
    log="$work/$target.log"
    if cargo fuzz run -s none "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -timeout=60 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=FAIL
        failed+=("$target")
    fi
    executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    printf '%-20s %-7s %12s %8s\n' "$target" "$result" "${executions:-?}" "${rate:-?}"
    if [[ $result != ok ]]; then
        grep -E "panicked at|^thread '|deadly signal|Test unit written to|ERROR: libFuzzer" "$log" | head -n 8 | sed 's/^/    /' || true
    fi
done

echo "logs and new corpus entries: $work"
if ((${#failed[@]})); then
    echo "failed: ${failed[*]} (crash inputs in $fuzz_dir/artifacts/<target>/, logs in $work)" >&2
    exit 1
fi
