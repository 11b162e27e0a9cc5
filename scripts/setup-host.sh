#!/usr/bin/env bash
# Installs the host packages the testbed needs (QEMU >= 10, libvirt, image and build tools).
# Idempotent: when everything is present it only checks and returns.
set -euo pipefail

# Virtualization and image tools: from bookworm-backports on Debian 12, native elsewhere.
vm_packages=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev debootstrap e2fsprogs)
# Build tools (libvirt-python, llama.cpp, workloads) and what the image builder calls.
tool_packages=(pkg-config openssh-client python3-venv python3-dev gcc g++ libc6-dev make cmake zstd xz-utils cpio procps)
packages=("${vm_packages[@]}" "${tool_packages[@]}")

. /etc/os-release
backports=()
if [ "${ID}" = debian ] && [ "${VERSION_CODENAME}" = bookworm ]; then
    # Debian 12's own QEMU (7.2) has no usable volatile CXL; backports has QEMU 10 and libvirt 11.
    backports=(-t bookworm-backports)
fi

qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null &&
        [ "$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p')" -ge 10 ]
}
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ] && qemu_ok; then
    exit 0
fi

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
if [ ${#backports[@]} -gt 0 ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d; then
    echo "setup: adding bookworm-backports (QEMU 10, libvirt 11.3)"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
        "${sudo[@]}" tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
fi
echo "setup: installing host packages: ${missing[*]:-qemu-system-x86 (>= 10)}"
"${sudo[@]}" apt-get update -q
install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends)
"${install[@]}" "${backports[@]}" "${vm_packages[@]}"
"${install[@]}" "${tool_packages[@]}"
qemu_ok || { echo "setup: QEMU >= 10 is required, found: $(qemu-system-x86_64 --version | head -1)" >&2; exit 1; }
