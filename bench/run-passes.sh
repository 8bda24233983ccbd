#!/usr/bin/env bash
# `make bench-run`: does `reconciler run` keep memory and CPU flat over many passes? (Not a
# test: the figures go in the README.) Starts moto on 127.0.0.1, applies the spec, then runs
# `reconciler run SPEC --interval 0 --iterations N` and samples the process's resident memory
# (VmRSS) and CPU time (utime + stime from /proc) when its status line for pass 1, 10, 100 and
# N arrives. Everything runs locally and stops by itself.
#
#   bench/run-passes.sh [SPEC] [PASSES]      (defaults: specs/prod.yaml 500)
#   RECONCILER=path/to/reconciler            (default: the debug build in $CARGO_TARGET_DIR)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
spec="${1:-specs/prod.yaml}"
passes="${2:-500}"
bin="${RECONCILER:-${CARGO_TARGET_DIR:-$root/target}/debug/reconciler}"
[ -x "$bin" ] || { echo "no reconciler binary at $bin: run make build first (or set RECONCILER)" >&2; exit 1; }
moto_server="$(bash "$root/tests/emulator/install-moto.sh")"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$(dirname "$moto_server")/python" "$root/tests/emulator/moto-aws.py" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto_pid=$!
work="$(mktemp -d)"
cleanup() { kill "$moto_pid" 2>/dev/null || true; [ -n "${run_pid:-}" ] && kill "$run_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -s "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true RECONCILER_WAIT_FOR_DEPLOYMENTS=false RECONCILER_POLL_INTERVAL=0.05
cd "$root"
"$bin" apply "$spec" --auto-approve >/dev/null 2>&1

ticks="$(getconf CLK_TCK)"
sample() { # pass pid
  local rss cpu
  rss="$(awk '/^VmRSS/ {print $2}' "/proc/$2/status")"
  cpu="$(awk -v t="$ticks" '{printf "%.2f", ($14 + $15) / t}' "/proc/$2/stat")"
  printf "pass %5d   RSS %6.1f MiB   CPU %8.2f s   wall %7.1f s\n" "$1" "$(echo "$rss / 1024" | bc -l)" "$cpu" "$(echo "$(date +%s.%N) - $started" | bc -l)"
}
mkfifo "$work/lines"
started="$(date +%s.%N)"
# One pass more than sampled, so that the process is still there when pass N is sampled.
"$bin" run "$spec" --interval 0 --jitter 0 --iterations "$((passes + 1))" > "$work/lines" 2>/dev/null &
run_pid=$!
n=0
results=""
while IFS= read -r line; do
  n=$((n + 1))
  case "$line" in *'"result":"in_sync"'*) ;; *) results="$results $n:$(echo "$line" | sed 's/.*"result":"\([a-z_]*\)".*/\1/')";; esac
  if [ "$n" -eq 1 ] || [ "$n" -eq 10 ] || [ "$n" -eq 100 ] || [ "$n" -eq "$passes" ]; then
    sample "$n" "$run_pid"
  fi
  [ "$n" -eq "$passes" ] && break
done < "$work/lines"
kill "$run_pid" 2>/dev/null || true
wait "$run_pid" 2>/dev/null || true
echo "passes: $n of $passes; every one in sync${results:+ except:$results}"
echo "binary: $bin; spec: $spec; machine: $(nproc) CPUs"
