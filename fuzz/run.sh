#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for a bounded time; fails if
# any finds a crash. See docs/fuzzing.md.
#
#   bash fuzz/run.sh                     # every target, 10 s each
#   FUZZ_SECONDS=300 bash fuzz/run.sh    # longer
#   bash fuzz/run.sh manifest properties # some targets
#
# FUZZ_SECONDS (10)   run time per target (libFuzzer -max_total_time)
# FUZZ_RSS_MB (2048)  memory limit per target (-rss_limit_mb)
# FUZZ_TIMEOUT (25)   seconds one input may take before it counts as a hang (-timeout)
# FUZZ_SANITIZER (none) cargo fuzz --sanitizer: none (the targets are safe Rust;
#                     half the cold build time), or address, memory, thread, leak
# FUZZ_JOBS_DIR       where the working corpora and logs go (a fresh temp dir)
# CARGO_TARGET_DIR    honoured as by cargo (default: fuzz/target)
#
# The committed seeds in fuzz/corpus/<target>/ are read, never written: new
# inputs go to a working corpus; a crash input lands in
# fuzz/artifacts/<target>/ and its path is printed.
set -uo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${FUZZ_SECONDS:-10}
rss_mb=${FUZZ_RSS_MB:-2048}
timeout=${FUZZ_TIMEOUT:-25}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
sanitizer=${FUZZ_SANITIZER:-none}

if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
    echo "fuzz: the $toolchain toolchain is not installed (rustup toolchain install $toolchain)" >&2
    exit 2
fi
if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo "+$toolchain" install cargo-fuzz --locked || {
        echo "fuzz: could not install cargo-fuzz" >&2
        exit 2
    }
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi

# The targets one by one (they share their dependencies, built once; the
# seed-making bins are not fuzz targets); debug assertions and overflow
# checks on, so an overflow is a crash too.
echo "fuzz: building ${targets[*]} (sanitizer: $sanitizer)"
for target in "${targets[@]}"; do
    (cd fuzz && cargo "+$toolchain" fuzz build -O -a -s "$sanitizer" "$target") || {
        echo "fuzz: the build of $target failed" >&2
        exit 2
    }
done

work=${FUZZ_JOBS_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/clusterhost-fuzz.XXXXXX")}
mkdir -p "$work"
work=$(cd "$work" && pwd)
failed=0
summary=()
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    log="$work/$target.log"
    mkdir -p "$corpus" "fuzz/corpus/$target" "fuzz/artifacts/$target"
    start=$(date +%s)
    (cd fuzz && cargo "+$toolchain" fuzz run -O -a -s "$sanitizer" "$target" "$corpus" "$root/fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout="$timeout" -print_final_stats=1 \
        -artifact_prefix="$root/fuzz/artifacts/$target/") >"$log" 2>&1
    status=$?
    elapsed=$(($(date +%s) - start))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    if [ "$status" -eq 0 ]; then
        line="fuzz: $target ok: ${execs:-?} runs in ${elapsed}s, ${cov:-cov: ?}"
    else
        failed=1
        crash=$(grep -o "Test unit written to .*" "$log" | tail -1 | sed 's/Test unit written to //')
        line="fuzz: $target FAILED (exit $status) after ${elapsed}s; input: ${crash:-none written}; log: $log"
        grep -m1 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" -A3 "$log" | sed 's/^/    /'
    fi
    echo "$line"
    summary+=("$line")
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "fuzz: a target found a crash; reproduce with: cd fuzz && cargo +nightly fuzz run -O -a -s $sanitizer TARGET INPUT" >&2
    exit 1
fi
