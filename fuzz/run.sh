#!/usr/bin/env bash
# Runs every fuzz target (or the ones named as arguments) for FUZZ_SECONDS
# seconds each (default 30). Exits non-zero when a target finds a crash (or
# fails to build); the crashing input is then in fuzz/artifacts/<target>/.
#
#   bash fuzz/run.sh                          # both targets, 30 s each
#   FUZZ_SECONDS=300 bash fuzz/run.sh request_object
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${FUZZ_SECONDS:-30}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(form_parser request_object)
fi

# fuzz/rust-toolchain.toml selects nightly here (-Zsanitizer needs it).
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "run.sh: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal || exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 1
fi

logs=target/run-logs
mkdir -p "$logs"
failed=()
for target in "${targets[@]}"; do
    echo "=== $target: ${seconds}s"
    # -print_final_stats: executions, exec/s and peak memory at the end.
    if cargo fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1 \
        2>&1 | tee "$logs/$target.log"; then
        status=ok
    else
        status=FAILED
        failed+=("$target")
    fi
    echo "=== $target: $status ($(grep -E '^#[0-9]+[[:space:]]+DONE' "$logs/$target.log" | tail -n 1))"
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "run.sh: crash or build failure in: ${failed[*]} (inputs under fuzz/artifacts/, logs under fuzz/$logs/)" >&2
    exit 1
fi
echo "run.sh: no crashes in ${targets[*]}"
