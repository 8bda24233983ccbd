#!/usr/bin/env bash
# Part of `make demo`: a signed webhook through the service binary (see demo_webhook.py).
# Expects the emulator environment (AWS_ENDPOINT_URL, ...) exported by examples/demo.sh.
set -euo pipefail
venv="$1"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
printf '\n\033[1m==> %s\033[0m\n' "driving a signed Benchling webhook through benchling-webhook"
"$venv/bin/python" "$root/examples/demo_webhook.py" "${CARGO_TARGET_DIR:-$root/target}/debug/benchling-webhook"
