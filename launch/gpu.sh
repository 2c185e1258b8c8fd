#!/usr/bin/env bash
# Runs an entry point on this host's GPUs, alone or as one process of a multi-node run.
#
# Usage: launch/gpu.sh [--platform cuda|cpu] [--port PORT] [--dry-run] -- COMMAND ...
#
# One process per node sees all of that node's GPUs. Which run this process belongs to comes from the
# environment, checked in this order:
#   1. plain variables, set by you or any scheduler: AUDIOPALM_COORDINATOR_ADDRESS (HOST:PORT of process 0),
#      AUDIOPALM_NUM_PROCESSES, AUDIOPALM_PROCESS_ID;
#   2. SLURM (`srun --nodes=N --ntasks-per-node=1 launch/gpu.sh -- ...`): the coordinator is the first node of
#      the step (SLURM_STEP_NODELIST, else SLURM_JOB_NODELIST) at --port, the process count SLURM_NTASKS and the
#      id SLURM_PROCID; with several tasks per node each task gets one GPU (entry SLURM_LOCALID of the step's);
#   3. otherwise a single process on this host.
# The entry points read the AUDIOPALM_* variables and call jax.distributed.initialize with them.
#
# GPU settings (each kept if already set): XLA_FLAGS gains --xla_gpu_enable_latency_hiding_scheduler=true
# (collectives overlap compute), XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 (XLA's share of GPU memory), NCCL_DEBUG=WARN.
# --platform cpu runs the same path on CPU (JAX_PLATFORMS=cpu, gloo collectives): how the tests check it.
#
# Options (also from the environment):
#   --platform P      AUDIOPALM_PLATFORM  cuda (default) or cpu
#   --port PORT       AUDIOPALM_COORDINATOR_PORT  the coordinator's port under SLURM (default 12355)
#   --dry-run         print the environment it would set and the command, run nothing
# What runs is decided by the command and its gin files; this script only decides where.
set -euo pipefail

platform="${AUDIOPALM_PLATFORM:-cuda}"
port="${AUDIOPALM_COORDINATOR_PORT:-12355}"
dry_run=0
die() { echo "gpu.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --platform=*) platform="${1#*=}"; shift;;
    --platform) platform="${2:-}"; shift 2 || die "--platform needs a value";;
    --port=*) port="${1#*=}"; shift;;
    --port) port="${2:-}"; shift 2 || die "--port needs a value";;
    --dry-run|--dry_run) dry_run=1; shift;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0;;
    --) shift; break;;
    *) die "unknown option $1 (see --help)";;
  esac
done
[ $# -gt 0 ] || die "give the command after --"
case "$platform" in cuda|cpu) ;; *) die "--platform must be cuda or cpu (got '$platform')";; esac
[[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number (got '$port')"

set_env() {  # exports NAME=VALUE unless NAME is already set; remembers it for --dry-run
  local name="$1" value="$2"
  if [ -z "${!name+x}" ]; then export "$name=$value"; fi
  shown+=("$name=${!name}")
}
shown=()

# Which run this process belongs to.
if [ -n "${AUDIOPALM_COORDINATOR_ADDRESS:-}" ]; then
  [ -n "${AUDIOPALM_NUM_PROCESSES:-}" ] && [ -n "${AUDIOPALM_PROCESS_ID:-}" ] \
    || die "AUDIOPALM_COORDINATOR_ADDRESS is set: set AUDIOPALM_NUM_PROCESSES and AUDIOPALM_PROCESS_ID too"
  mode="environment"
elif [ "${SLURM_NTASKS:-1}" -gt 1 ]; then
  # The step's nodes (an srun on part of the allocation), else the job's.
  nodelist="${SLURM_STEP_NODELIST:-${SLURM_JOB_NODELIST:-}}"
  [ -n "$nodelist" ] && [ -n "${SLURM_PROCID:-}" ] || die "SLURM_NTASKS > 1 without SLURM_STEP_NODELIST/SLURM_PROCID"
  if command -v scontrol >/dev/null; then
    head_node=$(scontrol show hostnames "$nodelist" | head -n 1)
  else  # a plain comma-separated list only: "node[01-04]" needs scontrol to expand
    [[ "$nodelist" != *"["* ]] || die "scontrol is needed to expand the node list $nodelist"
    head_node="${nodelist%%,*}"
  fi
  set_env AUDIOPALM_COORDINATOR_ADDRESS "$head_node:$port"
  set_env AUDIOPALM_NUM_PROCESSES "$SLURM_NTASKS"
  set_env AUDIOPALM_PROCESS_ID "$SLURM_PROCID"
  # Several tasks on this node (SLURM_STEP_TASKS_PER_NODE is e.g. "8(x2)"): each takes one of the node's GPUs,
  # entry SLURM_LOCALID of the GPUs SLURM gave the step (CUDA_VISIBLE_DEVICES), or that index.
  tasks_here="${SLURM_STEP_TASKS_PER_NODE:-${SLURM_NTASKS_PER_NODE:-1}}"
  tasks_here="${tasks_here%%[(,]*}"
  if [ "$platform" = cuda ] && [ "$tasks_here" != 1 ] && [ -n "${SLURM_LOCALID:-}" ]; then
    IFS=, read -r -a gpus <<< "${CUDA_VISIBLE_DEVICES:-}"
    if [ ${#gpus[@]} -gt "$SLURM_LOCALID" ]; then export CUDA_VISIBLE_DEVICES="${gpus[$SLURM_LOCALID]}"
    else export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"; fi
    shown+=("CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES")
  fi
  mode="SLURM"
else
  mode="single process"
fi

if [ "$platform" = cuda ]; then
  case " ${XLA_FLAGS:-} " in
    *" --xla_gpu_enable_latency_hiding_scheduler="*) ;;
    *) export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_enable_latency_hiding_scheduler=true";;
  esac
  shown+=("XLA_FLAGS=$XLA_FLAGS")
  set_env XLA_PYTHON_CLIENT_MEM_FRACTION 0.9
  set_env NCCL_DEBUG WARN
  set_env JAX_PLATFORMS cuda
else
  export JAX_PLATFORMS=cpu  # the entry points then use gloo for cross-process collectives
  shown+=("JAX_PLATFORMS=cpu")
fi

if [ "$mode" = environment ]; then
  shown+=("AUDIOPALM_COORDINATOR_ADDRESS=$AUDIOPALM_COORDINATOR_ADDRESS" "AUDIOPALM_NUM_PROCESSES=$AUDIOPALM_NUM_PROCESSES"
          "AUDIOPALM_PROCESS_ID=$AUDIOPALM_PROCESS_ID")
fi
echo "gpu.sh: $mode on $(hostname) ($platform)${AUDIOPALM_PROCESS_ID:+, process $AUDIOPALM_PROCESS_ID of $AUDIOPALM_NUM_PROCESSES}" >&2
if [ "$dry_run" = 1 ]; then
  printf '%s\n' "${shown[@]}"
  printf '%q ' "$@"; echo
  exit 0
fi
exec "$@"
