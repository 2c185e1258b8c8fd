#!/usr/bin/env bash
# Runs an entry point on this machine's CPU, optionally as N local processes on loopback.
# Usage: launch/local.sh [--processes N] [--devices_per_process D] -- python -m audiopalm.main.train --gin_file=...
# What runs is decided by the command and its gin files; this script only decides where.
set -euo pipefail
processes=1
devices=""
while [ $# -gt 0 ]; do
  case "$1" in
    --processes) processes="$2"; shift 2;;
    --devices_per_process) devices="$2"; shift 2;;
    --help|-h) sed -n 2,4p "$0"; exit 0;;
    --) shift; break;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
[ $# -gt 0 ] || { echo "give the command after --" >&2; exit 2; }
export JAX_PLATFORMS=cpu
if [ -n "$devices" ]; then export XLA_FLAGS="--xla_force_host_platform_device_count=$devices"; fi
if [ "$processes" -eq 1 ]; then exec "$@"; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
for ((i = 0; i < processes; i++)); do
  "$@" --coordinator_address="127.0.0.1:$port" --num_processes="$processes" --process_id="$i" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
