#!/usr/bin/env bash
# Installs the pinned local AWS emulator (moto, server mode) into a virtualenv owned by this
# checkout. Idempotent: a venv that already has the pinned version is reused.
# Prints the path of the moto_server executable on success.
set -euo pipefail
MOTO_VERSION="5.2.5"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${MOTO_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c "import moto,sys; sys.exit(0 if moto.__version__=='$MOTO_VERSION' else 1)" 2>/dev/null; then
  echo "$venv/bin/moto_server"; exit 0
fi
echo "installing moto[server]==$MOTO_VERSION into $venv" >&2
"$py" -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
echo "$venv/bin/moto_server"
