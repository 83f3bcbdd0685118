#!/usr/bin/env bash
# Builds the release binary of jobpath-server: the one build command of the container image
# (the Dockerfile's build stage runs this script) and of CI (.ci/run runs it too), so a change
# that would break the image's build breaks CI first. Prints the binary's path last.
#
# --locked: the image is built from Cargo.lock exactly as committed, never a fresh resolve.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p jobpath-server
bin="${CARGO_TARGET_DIR:-target}/release/jobpath-server"
"$bin" --version >&2
echo "$bin"
