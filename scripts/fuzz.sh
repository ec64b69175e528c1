#!/usr/bin/env bash
# Runs peerguard's fuzz targets (fuzz/, cargo-fuzz + libFuzzer), one after the other, one
# process each. See docs/fuzzing.md.
#
#   bash scripts/fuzz.sh [--seconds N] [--update-corpus] [--no-install] [target...]
#
#   --seconds N        time per target (default 3600)
#   --update-corpus    merge the inputs that add coverage into the committed fuzz/corpus/
#   --no-install       do not install nightly or cargo-fuzz: exit 3 when either is missing
#   target             parse_compile, peer_identity, decide_path (default: all three)
#
# The committed corpus is only read (never written, unless --update-corpus); new inputs,
# crash inputs and logs go to $CARGO_TARGET_DIR/fuzz/<target>/ (default target dir
# /var/tmp/peerguard-target, outside the clone). Exit 1 when a target crashes, with the
# crash input's path and the command that replays it.
#   FUZZ_SANITIZER  cargo-fuzz --sanitizer (default none: the fuzzed code is safe Rust, and
#                   AddressSanitizer would cost half the executions; set `address` to add it)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/peerguard-target}

seconds=3600
update=0
install=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --seconds=*) seconds=${1#--seconds=}; shift ;;
    --update-corpus) update=1; shift ;;
    --no-install) install=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(parse_compile peer_identity decide_path)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "fuzz.sh: no target $t (have: ${all[*]})" >&2; exit 2; }
done
log() { echo "[fuzz] $*" >&2; }

# --- toolchain: nightly (libFuzzer's sanitizer flags) and cargo-fuzz, both outside the clone --
export PATH="$HOME/.cargo/bin:$PATH"
have_nightly() { rustup run nightly rustc --version >/dev/null 2>&1; }
have_cargo_fuzz() { cargo +nightly fuzz --version >/dev/null 2>&1; }
if ! command -v rustup >/dev/null 2>&1; then
  echo "fuzz.sh: rustup is not installed (cargo-fuzz needs a nightly toolchain)" >&2; exit 3
fi
if ! have_nightly; then
  [ $install = 1 ] || { echo "fuzz.sh: no nightly toolchain" >&2; exit 3; }
  log "rustup toolchain install nightly --profile minimal"
  rustup toolchain install nightly --profile minimal >&2
fi
if ! have_cargo_fuzz; then
  [ $install = 1 ] || { echo "fuzz.sh: cargo-fuzz is not installed" >&2; exit 3; }
  log "cargo install cargo-fuzz --locked"
  cargo install cargo-fuzz --version '^0.13' --locked >&2
fi

triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
status=0
for t in "${targets[@]}"; do
  work="$CARGO_TARGET_DIR/fuzz/$t"
  mkdir -p "$work/corpus" "$work/artifacts"
  log "build $t"
  cargo +nightly fuzz build --fuzz-dir fuzz --sanitizer "${FUZZ_SANITIZER:-none}" "$t" >&2
  bin="$CARGO_TARGET_DIR/$triple/release/$t"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$work/artifacts/")
  [ -f "fuzz/dict/$t.dict" ] && args+=(-dict="fuzz/dict/$t.dict")
  log "run $t for ${seconds}s (new inputs: $work/corpus)"
  # New inputs go to the first directory; the committed corpus is read as seeds only.
  dirs=("$work/corpus")
  [ -d "fuzz/corpus/$t" ] && dirs+=("fuzz/corpus/$t")
  set +e
  "$bin" "${args[@]}" "${dirs[@]}" >"$work/last.log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/last.log" | tail -n1)
  corpus=$(grep -o 'corp: [0-9]*' "$work/last.log" | tail -n1 | cut -d' ' -f2)
  set -e
  if [ $rc -eq 0 ]; then
    echo "fuzz $t: ${runs:-?} runs in ${seconds}s, 0 crashes, corpus ${corpus:-?} inputs"
  else
    status=1
    tail -n 40 "$work/last.log" >&2
    crash=$(grep -o "Test unit written to .*" "$work/last.log" | tail -n1 | cut -d' ' -f5 || true)
    echo "fuzz $t: CRASH after ${runs:-?} runs (exit $rc): ${crash:-see $work/last.log}"
    [ -n "$crash" ] && echo "  replay: cargo +nightly fuzz run --fuzz-dir fuzz $t $crash"
  fi
  if [ $update = 1 ]; then
    log "merge new coverage into fuzz/corpus/$t"
    mkdir -p "fuzz/corpus/$t"
    # Edges only, smallest covering set: the committed corpus stays small (docs/fuzzing.md).
    "$bin" -use_counters=0 -set_cover_merge=1 "fuzz/corpus/$t" "$work/corpus" >"$work/merge.log" 2>&1 \
      || { tail -n 20 "$work/merge.log" >&2; status=1; }
  fi
done
exit $status
