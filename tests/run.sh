#!/usr/bin/env bash
# Runs every test of chinwag: unit, property and integration tests (cargo), then the
# conformance, browser and service suites. Sets up what it needs on a fresh Debian
# machine (a Python venv, Debian packages) and fails loudly on the first problem.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Each step says when it starts, in seconds since the run began: CI allows 25
# minutes in all, and this shows which step grew.
step() { printf '\n==> %s (at %d s)\n' "$*" "$SECONDS"; }

# Installs Debian packages that are missing (as root, or through sudo).
need_debian() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "cargo doc (broken links in the API documentation are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "what the integration tests run beside the code: redis-server, the Python venv"
redis_before="$(pgrep -x redis-server || true)"
need_debian redis-server
# Installing the package may start a system Redis; the tests start their own on free
# ports, and nothing may be left running, so stop one that the install started.
if [ -z "$redis_before" ] && pgrep -x redis-server >/dev/null; then pkill -x redis-server || true; fi
PY="$(tests/setup-python.sh)"

step "cargo test --workspace, and each microbenchmark once (criterion's test mode)"
cargo test --workspace --all-features --quiet
# In the test profile, the crates the tests just built serve: under `cargo bench`
# (the release profile) the workspace compiled again, a minute on 2 cores.
cargo test --quiet -p chinwag-bench --all-features --bench core >/dev/null

step "build the release binaries (chinwag, chinwag-bench, the examples that embed the core)"
cargo build --release --quiet -p chinwag -p chinwag-bench \
  -p chinwag-example-blocking-echo -p chinwag-example-event-loop-echo

step "gateway: the README's two-node example (redis-server, two nodes, the Python handler)"
tests/gateway/two_nodes.sh target/release/chinwag "$PY"

step "deployment kit: hadolint, kubernetes-validate, docker-compose config, the binary as each manifest runs it"
tests/deploy/check.sh target/release/chinwag "$PY"

step "Autobahn conformance (cases 1-13, compression included, both runtimes, both roles)"
tests/conformance/run.sh target/release/chinwag

step "permessage-deflate interop with Python websockets (both roles, context takeover on and off)"
"$PY" tests/interop/deflate.py target/release/chinwag

step "browser test of the chat page (headless Chromium), both runtimes, and with Alice and Bob on two nodes over Redis"
need_debian chromium chromium-driver
"$PY" tests/browser/chat_page.py target/release/chinwag --runtime tokio --screenshot tests/out/browser/chat-tokio.png
"$PY" tests/browser/chat_page.py target/release/chinwag --runtime async-std --screenshot tests/out/browser/chat-async-std.png
"$PY" tests/browser/chat_page.py target/release/chinwag --runtime tokio --nodes 2

step "benchmarks: smoke run of every mode (no timing assertions)"
need_debian valgrind # the instructions mode counts under callgrind
target/release/chinwag-bench smoke >/dev/null
apps/bench/scripts/gateway-bus.sh 2000 target/release/chinwag

step "reliability: short soak (300 clients, 10 s; on one node, then on two nodes over Redis) and slow-client test of the chat, both runtimes"
for runtime in tokio async-std; do
  target/release/chinwag-bench soak --clients 300 --seconds 10 --runtime "$runtime"
  target/release/chinwag-bench soak --clients 300 --seconds 10 --rate 2 --nodes 2 --runtime "$runtime"
  target/release/chinwag-bench slow-client --runtime "$runtime"
done

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  step "installing cargo-fuzz (the fuzz targets run below)"
  cargo install --locked --quiet cargo-fuzz
fi
if command -v cargo-fuzz >/dev/null 2>&1; then
  step "fuzz targets: replay kept regressions, then fuzz each for ${FUZZ_SECONDS:=10} s, two at a time"
  # The stable toolchain needs RUSTC_BOOTSTRAP for AddressSanitizer's -Z flags.
  (
    cd fuzz
    # Built once, up front: a target that does not build is not a failure found
    # by fuzzing, and must not be reported as one.
    build_log="$(mktemp)"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz build >"$build_log" 2>&1; then
      tail -40 "$build_log"
      rm -f "$build_log"
      echo "the fuzz targets do not build (nothing was fuzzed): cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build"
      exit 1
    fi
    rm -f "$build_log"
    # Replays target $1's kept regressions, then fuzzes it from a copy of its kept
    # corpus (the run must not change the checkout). Says what it found on stdout;
    # fails if anything failed.
    fuzz_target() {
      local target="$1" failed=0 input corpus found
      # A regression is replayed one input at a time, so that the report names it.
      for input in regressions/"$target"/*; do
        [ -e "$input" ] || continue
        RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$input" >/dev/null 2>&1 || {
          echo "fuzz regression fails: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $target $input"
          failed=1
        }
      done
      corpus="$(mktemp -d)"
      if [ -d "corpus/$target" ]; then cp -R "corpus/$target/." "$corpus/"; fi
      touch "$corpus.started"
      if RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$corpus" -- -max_total_time="$FUZZ_SECONDS" -max_len=4096 \
        >"$corpus.log" 2>&1; then
        grep -E "^#[0-9]+.*DONE" "$corpus.log" | sed "s/^/$target: /"
      else
        tail -40 "$corpus.log"
        # libFuzzer saves the input of a crash, a leak or a timeout as it stops.
        found="$(find "artifacts/$target" -type f -newer "$corpus.started" 2>/dev/null | head -1 || true)"
        found="${found:-$(grep -oE "artifacts/$target/[^ ]+" "$corpus.log" | tail -1 || true)}"
        if [ -n "$found" ]; then
          echo "fuzz target $target found a failure: its input is fuzz/$found"
        else
          echo "fuzz target $target stopped without saving an input (not a finding: see its log above)"
        fi
        failed=1
      fi
      rm -rf "$corpus" "$corpus.log" "$corpus.started"
      return "$failed"
    }
    # Two lanes, one per core of a small CI machine, each taking every other
    # target. Every target runs even when one fails, so that one open bug does not
    # hide another; the step fails at the end if any did.
    reports="$(mktemp -d)"
    targets=($(cargo fuzz list))
    lane() {
      local i
      for ((i = $1; i < ${#targets[@]}; i += 2)); do
        fuzz_target "${targets[$i]}" >"$reports/${targets[$i]}" 2>&1 || touch "$reports/${targets[$i]}.failed"
      done
    }
    lane 0 &
    lane 1 &
    wait
    failed=()
    for target in "${targets[@]}"; do
      cat "$reports/$target"
      [ -e "$reports/$target.failed" ] && failed+=("$target")
    done
    rm -rf "$reports"
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzzing failed: ${failed[*]}"
      exit 1
    fi
  )
else
  echo "cargo-fuzz is installed but not on PATH: add ~/.cargo/bin to PATH"
  exit 1
fi

step "all tests passed"
