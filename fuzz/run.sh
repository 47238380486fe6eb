#!/usr/bin/env bash
# Runs one fuzz target for a while: fuzz/run.sh TARGET SECONDS
# Targets: record_decoder, manifest, base_snapshot, http_bodies. Seeds come from fuzz/seeds/TARGET (valid
# files written by `cargo run --example make_fixture`). On a crash libFuzzer saves the
# reproducer under fuzz/artifacts/TARGET/ and this script exits non-zero.
# Replay one: RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…
set -euo pipefail
target=${1:?usage: fuzz/run.sh TARGET SECONDS}
secs=${2:-30}
cd "$(dirname "$0")"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
mkdir -p "corpus/$target" "artifacts/$target"
seeds=()
if [ -d "seeds/$target" ]; then seeds=("seeds/$target"); fi
# cargo-fuzz needs nightly features (sanitizers); RUSTC_BOOTSTRAP enables them on stable.
export RUSTC_BOOTSTRAP=1
exec cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$secs" -artifact_prefix="artifacts/$target/" -print_final_stats=1
