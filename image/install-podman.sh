#!/usr/bin/env bash
# Installs the daemonless container engine the image build and the image test use: Debian's
# podman, and runc (crun refuses this project's machines' hybrid cgroups; see README "The
# container image"). Idempotent and quick when both are present.
#
# Exit status: 0 podman and runc are usable; 2 they are missing and cannot be installed here
# (not root, no apt-get, or apt-get failed, e.g. no Debian mirror reachable): the reason is on
# stderr, and the image test reports itself SKIPPED instead of failing.
set -uo pipefail

if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; then
  exit 0
fi
missing="$(for t in podman runc; do command -v "$t" >/dev/null 2>&1 || printf '%s ' "$t"; done)"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-podman: ${missing}missing and not root, so not installable here (install them: apt-get install podman runc)" >&2
  exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-podman: ${missing}missing and no apt-get to install them with" >&2
  exit 2
fi
# Two test processes may get here at once; apt holds its own lock, so wait for it rather than fail.
exec 9>/tmp/fargate-reconciler-install-podman.lock
flock 9
if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; then
  exit 0
fi
echo "install-podman: installing ${missing}with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq podman runc; } >/tmp/fargate-reconciler-install-podman.log 2>&1; then
  tail -n 20 /tmp/fargate-reconciler-install-podman.log >&2
  echo "install-podman: apt-get could not install ${missing}(log: /tmp/fargate-reconciler-install-podman.log)" >&2
  exit 2
fi
command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1
