#!/bin/sh
# The image's entrypoint: sizes libuv's thread pool (image decoding through sharp, file reads) to
# the CPUs this container may use, then replaces itself with Node (exec), so that Node is PID 1's
# child-free successor and receives SIGTERM directly. UV_THREADPOOL_SIZE must be set before Node
# starts: libuv creates its pool on first use, which happens while the ES modules load.
set -eu

cpus() {
  # cgroup v2: "max 100000" or "<quota> <period>"; cgroup v1: cfs_quota_us / cfs_period_us.
  if [ -r /sys/fs/cgroup/cpu.max ]; then
    read -r quota period < /sys/fs/cgroup/cpu.max
  elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
    period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
  else
    quota=max
    period=1
  fi
  online=$(nproc 2>/dev/null || echo 4)
  case "$quota" in
    max | -1) echo "$online" ;;
    *) n=$(((quota + period - 1) / period)); [ "$n" -lt "$online" ] && echo "$n" || echo "$online" ;;
  esac
}

if [ -z "${UV_THREADPOOL_SIZE:-}" ]; then
  # The pool decodes images (sharp) beside the inference worker: leave it one core. On 2 cores
  # 1 thread served more and kept the event loop steadier than libuv's default 4 (README,
  # Configuration); more than 16 decoders gain nothing at these image sizes.
  n=$(($(cpus) - 1))
  [ "$n" -lt 1 ] && n=1
  [ "$n" -gt 16 ] && n=16
  export UV_THREADPOOL_SIZE="$n"
fi

case "${1:-serve}" in
  serve) shift || true; exec node /app/dist/src/main.js "$@" ;;
  gim) shift; exec node /app/dist/src/cli/main.js "$@" ;;
  threadpool-size) echo "$UV_THREADPOOL_SIZE" ;;
  *) exec "$@" ;;
esac
