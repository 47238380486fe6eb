#!/usr/bin/env bash
# Crash soak: SIGKILLs the mixed workload (tests/crash.rs) KILLS times under each fsync policy,
# on a release build, one policy after the other, and prints one summary line per policy:
#   policy=always kills=N lost=… duplicated=… unexpected=… refused_to_open=…
# Usage: scripts/soak.sh [KILLS] [POLICY...]     (default: 1000 always everysec no)
# Env: DURQ_CRASH_SEED replays a run (its seed is printed); CARGO_FLAGS adds cargo flags.
# Exit status: 0 if every policy came out clean, 1 otherwise (problems are printed above).
set -u
cd "$(dirname "$0")/.."
KILLS="${1:-1000}"
shift || true
POLICIES=("$@")
[ ${#POLICIES[@]} -eq 0 ] && POLICIES=(always everysec no)
# shellcheck disable=SC2086
bin="$(cargo test --release --test crash ${CARGO_FLAGS:-} --no-run --message-format=json 2>/dev/null |
    grep '"kind":\["test"\]' | grep '"name":"crash"' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "cannot build the crash test binary" >&2
    exit 1
fi
status=0
summary=()
for p in "${POLICIES[@]}"; do
    log="$(mktemp -t durq-soak-"$p".XXXXXX)"
    # shellcheck disable=SC2086
    DURQ_SOAK_KILLS="$KILLS" "$bin" "sigkill_mixed_$p" --exact --nocapture --test-threads=1 \
        >"$log" 2>&1
    rc=$?
    line="$(grep -E "^policy=$p kills=" "$log" | tail -1)"
    [ -z "$line" ] && line="policy=$p: no summary (exit $rc); see $log"
    if [ $rc -ne 0 ]; then
        status=1
        grep -E "^(LOST|DUPLICATED|UNEXPECTED|REFUSED|  \(above|mixed workload)" "$log" | head -40
        echo "(full log: $log)"
    else
        rm -f "$log"
    fi
    echo "$line"
    summary+=("$line")
done
echo "---- soak summary ($KILLS kills per policy)"
printf '%s\n' "${summary[@]}"
exit $status
