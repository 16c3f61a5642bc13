#!/usr/bin/env bash
# A CPU Vulkan driver (Mesa's lavapipe) for testing the WebGPU smoke path on a machine without a
# GPU: test/unit/smoke-gpu.test.ts runs the bundle on it when this has run (or VK_DRIVER_FILES
# names an ICD). Prints the ICD file to use as VK_DRIVER_FILES on stdout.
#
# Why not just `apt-get install mesa-vulkan-drivers`: Debian 12's lavapipe (Mesa 22.3) lacks
# features Dawn requires ("Vulkan shaderUniform*ArrayDynamicIndexing required": no adapter). Mesa
# 25 from bookworm-backports works; installing it would upgrade 13 Mesa/libdrm packages, so on
# bookworm only its .deb is downloaded (through a private apt list, the system's sources are left
# alone) and unpacked into .tmp/lavapipe. It runs against bookworm's libdrm and libllvm15.
# Installs the Vulkan loader libvulkan1 (0.1 MB) system-wide if it is missing. Needs root for that.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${LAVAPIPE_DIR:-$PWD/.tmp/lavapipe}
icd="$out/lvp_icd.json"
lib="$out/root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
log() { echo "[lavapipe] $*" >&2; }

if [ -f "$icd" ] && [ -f "$lib" ] && ldconfig -p | grep -q 'libvulkan\.so\.1 '; then
  echo "$icd"
  exit 0
fi
mkdir -p "$out"
export DEBIAN_FRONTEND=noninteractive
if ! ldconfig -p | grep -q 'libvulkan\.so\.1 '; then
  log "installing libvulkan1 (the Vulkan loader)"
  apt-get install -y --no-install-recommends libvulkan1 >/dev/null
fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ "$codename" = bookworm ]; then
  # The system's own Debian mirror (first URIs: of its deb822 sources, else of sources.list).
  uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 ~ /^bookworm/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || { log "no Debian mirror in the apt sources"; exit 1; }
  apt_dir="$out/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bookworm-backports main" >"$apt_dir/sources.list"
  opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
    -o APT::Sandbox::User=root -o Debug::NoLocking=1)
  log "bookworm-backports index"
  apt-get "${opts[@]}" update -qq >/dev/null
  log "downloading mesa-vulkan-drivers from bookworm-backports"
  (cd "$out" && rm -f mesa-vulkan-drivers_*.deb && apt-get "${opts[@]}" download -qq mesa-vulkan-drivers/bookworm-backports)
else
  # Debian 13 and later: the distribution's own lavapipe is new enough.
  (cd "$out" && rm -f mesa-vulkan-drivers_*.deb && apt-get download -qq mesa-vulkan-drivers)
fi
rm -rf "$out/root"
dpkg-deb -x "$out"/mesa-vulkan-drivers_*.deb "$out/root"
[ -f "$lib" ] || { log "no libvulkan_lvp.so in the package"; exit 1; }
if ldd "$lib" | grep -q 'not found'; then
  log "libvulkan_lvp.so misses libraries:"
  ldd "$lib" | grep 'not found' >&2
  exit 1
fi
api=$(sed -n 's/.*"api_version": *"\([^"]*\)".*/\1/p' "$out"/root/usr/share/vulkan/icd.d/lvp_icd*.json | head -1)
printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "%s"}}\n' \
  "$lib" "${api:-1.3.0}" >"$icd"
log "$(basename "$out"/mesa-vulkan-drivers_*.deb) unpacked; VK_DRIVER_FILES=$icd"
echo "$icd"
