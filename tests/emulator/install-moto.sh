#!/usr/bin/env bash
# Installs the pinned local AWS emulator (moto, server mode), the pinned IAM policy linter
# (parliament, which tests/policy.rs runs on the printed policies) and Benchling's pinned SDK
# (its webhook verifier is the reference of tests/service.rs's differential test) into a
# virtualenv owned by this checkout, with the pinned JSON Schema validator the spec property
# tests check specs/schema.json with (tests/spec_properties.rs). Idempotent: a venv that
# already has the pinned versions is reused. Prints the path of the moto_server executable on success (parliament
# is beside it).
set -euo pipefail
MOTO_VERSION="5.2.5"
PARLIAMENT_VERSION="1.6.4"
BENCHLING_SDK_VERSION="1.25.0"
JSONSCHEMA_VERSION="4.26.0"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${MOTO_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
if [ -x "$venv/bin/moto_server" ] && [ -x "$venv/bin/parliament" ] && "$venv/bin/python" -c "
import sys, moto
from importlib.metadata import version
sys.exit(0 if moto.__version__ == '$MOTO_VERSION' and version('parliament') == '$PARLIAMENT_VERSION'
         and version('benchling-sdk') == '$BENCHLING_SDK_VERSION'
         and version('jsonschema') == '$JSONSCHEMA_VERSION' else 1)" 2>/dev/null; then
  echo "$venv/bin/moto_server"; exit 0
fi
echo "installing moto[server]==$MOTO_VERSION, parliament==$PARLIAMENT_VERSION, benchling-sdk==$BENCHLING_SDK_VERSION and jsonschema==$JSONSCHEMA_VERSION into $venv" >&2
"$py" -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" "parliament==$PARLIAMENT_VERSION" \
  "benchling-sdk[cryptography]==$BENCHLING_SDK_VERSION" "jsonschema==$JSONSCHEMA_VERSION" >&2
echo "$venv/bin/moto_server"
