#!/usr/bin/env bash
# Stages the root filesystem of a FROM-scratch image for one dynamically or statically linked
# binary: the binary at /<its name>, exactly the shared libraries `ldd` lists (the dynamic
# loader included), the CA certificates (rustls reads /etc/ssl/certs/ca-certificates.crt),
# /etc/passwd and /etc/group with the unprivileged user 1000:1000, /etc/nsswitch.conf, and an
# empty /tmp (mode 1777; a read-only root needs a volume or tmpfs mounted there).
#
#   image/rootfs.sh BINARY DIR
#
# Used by image/build.sh (`make image`, the image test) and by service/Dockerfile's build
# stage, so the two images hold the same files. Needs bash, ldd and the ca-certificates
# package of the machine (or build stage) the binary was built on: the libraries copied are
# the ones it was linked against.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BINARY DIR" >&2
  exit 64
fi
binary="$1"
root="$2"
[ -x "$binary" ] || { echo "rootfs: $binary is not an executable file (build it first)" >&2; exit 1; }
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "rootfs: $ca is missing: install the ca-certificates package" >&2; exit 1; }

mkdir -p "$root"
[ -z "$(ls -A "$root")" ] || { echo "rootfs: $root is not empty" >&2; exit 1; }

# Copies a file (following symlinks, keeping its mode: the loader must stay executable) to
# PATH under the root.
place() {
  mkdir -p "$root$(dirname "$2")"
  cp -L --preserve=mode "$1" "$root$2"
}

place "$binary" "/$(basename "$binary")"

# ldd lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", the loader as
# "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)" (in the kernel: skipped),
# and for a static binary "not a dynamic executable" / "statically linked".
libs=0
if ldd_out="$(ldd "$binary" 2>&1)"; then
  if grep -q 'not found' <<<"$ldd_out"; then
    echo "rootfs: $binary needs libraries this machine lacks:" >&2
    grep 'not found' <<<"$ldd_out" >&2
    exit 1
  fi
  while read -r lib; do
    place "$lib" "$lib"
    libs=$((libs + 1))
  done < <(sed -n -e 's/^.* => \(\/[^ ]*\) (0x[0-9a-f]*)$/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (0x[0-9a-f]*)$/\1/p' <<<"$ldd_out")
elif ! grep -q -e 'not a dynamic executable' -e 'statically linked' <<<"$ldd_out"; then
  echo "rootfs: ldd $binary failed: $ldd_out" >&2
  exit 1
fi

place "$ca" "$ca"
chmod 0644 "$root$ca"
mkdir -p "$root/etc"
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
app:x:1000:1000:app:/tmp:/sbin/nologin
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
app:x:1000:
GROUP
# Without it glibc asks DNS before /etc/hosts.
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
install -d -m 1777 "$root/tmp"

echo "rootfs: $(basename "$binary") with $libs shared libraries (ldd) and the CA certificates in $root" >&2
