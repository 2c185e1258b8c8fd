#!/usr/bin/env bash
# Runs one command on every worker of a Cloud TPU VM (one slice or several) and streams worker 0's log.
#
# Usage: launch/tpu_pod.sh [options] ACTION [-- COMMAND ...]
#
# Actions:
#   up -- CMD    create (or reuse) the TPU, install the project on every worker, run CMD; the usual one.
#                Rerun the same line after a preemption: a preempted TPU is recreated and a training
#                command resumes from its newest checkpoint (it refuses nothing it wrote before).
#   create       create the TPU, or reuse it if it exists and is healthy (a preempted one is deleted first)
#   setup        copy this checkout to every worker and install it (.venv with jax[tpu])
#   run -- CMD   copy this checkout, start CMD on every worker at once (detached), stream worker 0's log
#   logs         stream worker 0's log of the job until it ends; exits with the job's status
#   stop         stop the job on every worker (SIGTERM: a training run saves a checkpoint first)
#   delete       delete the TPU (and its queued resource)
#   status       show the TPU's state and the job's on worker 0
#
# Options (each also read from the environment variable named after it):
#   --name NAME          TPU_NAME     the TPU (queued resource and node; slice i of a multi-slice is NAME-i)
#   --zone ZONE          TPU_ZONE     e.g. us-east5-a
#   --project PROJECT    TPU_PROJECT  default: gcloud's configured project
#   --type TYPE          TPU_TYPE     accelerator type (gcloud's names), e.g. v5p-256, v5litepod-64, v6e-256, v4-32
#   --slices N           TPU_SLICES   number of slices (default 1); >1 is a multi-slice (queued resource)
#   --runtime VERSION    TPU_RUNTIME  TPU software version (default: by generation, see below)
#   --spot               TPU_SPOT=1   Spot capacity (preemptible, cheaper)
#   --vm                 TPU_VM=1     create with `tpu-vm create` rather than a queued resource (1 slice)
#   --job NAME           TPU_JOB      the job's name on the workers (default: job); logs in REMOTE_DIR/logs/
#   --remote_dir DIR     TPU_REMOTE_DIR  where the project lives on each worker (default: audiopalm, in $HOME)
#   --env KEY=VALUE      extra environment for the command and the setup (repeatable)
#   --dry-run            print every command this would run, run none
#
# What runs is the command and its gin files (gin_configs/); this script only decides where. Every worker runs
# the same command with AUDIOPALM_DISTRIBUTED_AUTO=1, so the entry points call jax.distributed.initialize() and
# JAX reads the pod's (and a multi-slice's) topology itself. Example (docs/user_guide.md):
#   launch/tpu_pod.sh --name=ap8b --zone=us-east5-a --type=v5p-256 --spot up -- \
#     .venv/bin/python -m audiopalm.main.train --gin_file=gin_configs/experiments/speech_text_from_hf.gin \
#     --gin.MODEL_DIR=gs://bucket/runs/ap8b --gin.INIT_DIR=gs://bucket/imports/llama_3_8b \
#     --gin.HF_DIR=/models/llama-3-8b --gin.VOCAB_SIZE=129280 --gin.TOKENS_DIR=gs://bucket/tokens/emilia_en
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

name="${TPU_NAME:-}"
zone="${TPU_ZONE:-}"
project="${TPU_PROJECT:-}"
type="${TPU_TYPE:-}"
slices="${TPU_SLICES:-1}"
runtime="${TPU_RUNTIME:-}"
spot="${TPU_SPOT:-0}"
vm="${TPU_VM:-0}"
job="${TPU_JOB:-job}"
remote_dir="${TPU_REMOTE_DIR:-audiopalm}"
poll="${TPU_POLL_SECONDS:-30}"  # seconds between state checks while the TPU is being provisioned
dry_run=0
envs=()
action=""

die() { echo "tpu_pod.sh: $*" >&2; exit 2; }
value() { [ -n "${2:-}" ] || die "$1 needs a value"; echo "$2"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --name=*|--zone=*|--project=*|--type=*|--slices=*|--runtime=*|--job=*|--remote_dir=*|--env=*)
      key="${1%%=*}"; val="${1#*=}"; shift; set -- "$key" "$val" "$@"; continue;;
    --name) name=$(value "$1" "${2:-}"); shift 2;;
    --zone) zone=$(value "$1" "${2:-}"); shift 2;;
    --project) project=$(value "$1" "${2:-}"); shift 2;;
    --type) type=$(value "$1" "${2:-}"); shift 2;;
    --slices) slices=$(value "$1" "${2:-}"); shift 2;;
    --runtime) runtime=$(value "$1" "${2:-}"); shift 2;;
    --job) job=$(value "$1" "${2:-}"); shift 2;;
    --remote_dir) remote_dir=$(value "$1" "${2:-}"); shift 2;;
    --env) envs+=("$(value "$1" "${2:-}")"); shift 2;;
    --spot) spot=1; shift;;
    --vm) vm=1; shift;;
    --dry-run|--dry_run) dry_run=1; shift;;
    -h|--help) usage; exit 0;;
    --) shift; break;;
    -*) die "unknown option $1 (see --help)";;
    *) [ -z "$action" ] || die "one action only (got '$action' and '$1')"; action="$1"; shift;;
  esac
done
command_args=("$@")

# Check every setting before touching the cloud.
case "$action" in
  up|run) [ ${#command_args[@]} -gt 0 ] || die "'$action' needs the command after --";;
  create|setup|logs|stop|delete|status) [ ${#command_args[@]} -eq 0 ] || die "'$action' takes no command";;
  "") usage >&2; exit 2;;
  *) die "unknown action '$action' (see --help)";;
esac
[ -n "$name" ] || die "give --name (or TPU_NAME)"
[ -n "$zone" ] || die "give --zone (or TPU_ZONE)"
[[ "$name" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name '$name': lower-case letters, digits and '-'"
[[ "$slices" =~ ^[1-9][0-9]*$ ]] || die "--slices must be a positive integer (got '$slices')"
[[ "$job" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--job '$job': letters, digits, '_', '.', '-'"
for kv in "${envs[@]+"${envs[@]}"}"; do [[ "$kv" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env '$kv' is not KEY=VALUE"; done
if [ "$slices" -gt 1 ] && [ "$vm" = 1 ]; then die "a multi-slice TPU is a queued resource: drop --vm"; fi
if [ "$action" = create ] || [ "$action" = up ]; then
  [ -n "$type" ] || die "give --type (or TPU_TYPE), e.g. v5p-256"
  if [ -z "$runtime" ]; then
    case "$type" in
      v4-*) runtime=tpu-ubuntu2204-base;;
      v5litepod-*) runtime=v2-alpha-tpuv5-lite;;
      v5p-*) runtime=v2-alpha-tpuv5;;
      v6e-*) runtime=v2-alpha-tpuv6e;;
      *) die "no default --runtime for --type '$type': give one";;
    esac
  fi
fi

cd "$(dirname "$0")/.."
gcloud_flags=(--zone="$zone")
[ -z "$project" ] || gcloud_flags+=(--project="$project")
archive=".launch/$name-code.tar.gz"

# The nodes: NAME for one slice, NAME-0 ... NAME-(N-1) for a multi-slice (the queued resource's node prefix).
nodes=()
if [ "$slices" -eq 1 ]; then nodes=("$name"); else for ((i = 0; i < slices; i++)); do nodes+=("$name-$i"); done; fi

# Prints a command line a shell reads back as the same words: plain words bare, others in single quotes
# (after a flag's '=', so `--command='cd audiopalm && ...'` stays readable).
quote() {
  if [[ "$1" =~ ^[-A-Za-z0-9_./:=@%+,]+$ ]]; then printf '%s' "$1"; return; fi
  local prefix="" rest="$1" q="'\\''"
  if [[ "$1" =~ ^(--[A-Za-z0-9_-]+=)(.*)$ ]]; then prefix="${BASH_REMATCH[1]}"; rest="${BASH_REMATCH[2]}"; fi
  printf "%s'%s'" "$prefix" "${rest//\'/$q}"
}
show() { local sep="" word; for word in "$@"; do printf '%s' "$sep"; quote "$word"; sep=" "; done; echo; }
# Runs a command, or prints it under --dry-run.
do_run() { if [ "$dry_run" = 1 ]; then show "$@"; else "$@"; fi; }
note() { if [ "$dry_run" = 1 ]; then echo "# $*"; else echo "tpu_pod.sh: $*" >&2; fi; }
# Runs one command per node at once (a multi-slice's nodes in parallel); fails if any fails.
each_node() {
  local pids=() status=0 node
  for node in "${nodes[@]}"; do
    if [ "$dry_run" = 1 ]; then "$@" "$node"; else "$@" "$node" & pids+=($!); fi
  done
  for pid in "${pids[@]+"${pids[@]}"}"; do wait "$pid" || status=$?; done
  return "$status"
}
ssh_all() { do_run gcloud compute tpus tpu-vm ssh "$2" "${gcloud_flags[@]}" --worker=all --command="$1"; }
ssh_worker0() { do_run gcloud compute tpus tpu-vm ssh "${nodes[0]}" "${gcloud_flags[@]}" --worker=0 --command="$1"; }

# The remote side of every action is launch/worker.sh, shipped with the code.
remote() { printf 'cd %q && launch/worker.sh' "$remote_dir"; printf ' %q' "$@"; }

if [ "$vm" = 1 ]; then
  describe=(gcloud compute tpus tpu-vm describe "$name" "${gcloud_flags[@]}" --format='value(state)')
else
  describe=(gcloud compute tpus queued-resources describe "$name" "${gcloud_flags[@]}" --format='value(state.state)')
fi
tpu_state() {  # the TPU's state: ACTIVE (queued resource) or READY (VM) when usable, NOT_FOUND when there is none
  local state
  state=$("${describe[@]}" 2>/dev/null) || state=NOT_FOUND
  echo "${state:-NOT_FOUND}"
}

do_delete() {
  if [ "$vm" = 1 ]; then
    do_run gcloud compute tpus tpu-vm delete "$name" "${gcloud_flags[@]}" --quiet
  else
    do_run gcloud compute tpus queued-resources delete "$name" "${gcloud_flags[@]}" --force --quiet
  fi
}

do_create() {
  local state=NOT_FOUND
  if [ "$dry_run" = 1 ]; then
    note "reuse the TPU if this says ACTIVE (queued resource) or READY (VM); delete it first if preempted/failed:"
    show "${describe[@]}"
  else
    state=$(tpu_state)
    note "TPU $name: $state"
    case "$state" in
      ACTIVE|READY) return 0;;
      WAITING_FOR_RESOURCES|PROVISIONING|ACCEPTED|CREATING|STARTING) wait_ready; return 0;;
      NOT_FOUND) ;;
      *) note "deleting $name ($state) to recreate it"; do_delete;;  # PREEMPTED, SUSPENDED, FAILED, ...
    esac
  fi
  local create=()
  if [ "$vm" = 1 ]; then
    create=(gcloud compute tpus tpu-vm create "$name" "${gcloud_flags[@]}" --accelerator-type="$type"
            --version="$runtime")
  else
    create=(gcloud compute tpus queued-resources create "$name" "${gcloud_flags[@]}" --accelerator-type="$type"
            --runtime-version="$runtime")
    if [ "$slices" -eq 1 ]; then create+=(--node-id="$name"); else create+=(--node-count="$slices" --node-prefix="$name"); fi
  fi
  [ "$spot" = 1 ] && create+=(--spot)
  do_run "${create[@]}"
  wait_ready
}

wait_ready() {
  [ "$vm" = 1 ] && return 0  # tpu-vm create returns when the VM is READY
  if [ "$dry_run" = 1 ]; then
    note "every 30 s until ACTIVE:"
    show "${describe[@]}"
    return 0
  fi
  local state
  while true; do
    state=$(tpu_state)
    case "$state" in
      ACTIVE) note "TPU $name is ACTIVE"; return 0;;
      WAITING_FOR_RESOURCES|PROVISIONING|ACCEPTED|CREATING) note "TPU $name: $state; waiting"; sleep "$poll";;
      *) die "TPU $name is $state: it will not become ACTIVE (see gcloud compute tpus queued-resources describe)";;
    esac
  done
}

sync_code() {
  do_run mkdir -p .launch
  if [ "$dry_run" = 1 ]; then
    note "this checkout's tracked and unignored files:"
    echo "git ls-files -z --cached --others --exclude-standard | tar --null -T - -czf $archive"
  else
    git ls-files -z --cached --others --exclude-standard | tar --null -T - -czf "$archive"
  fi
  scp_node() {
    do_run gcloud compute tpus tpu-vm scp "$archive" "$1:$name-code.tar.gz" "${gcloud_flags[@]}" --worker=all
    ssh_all "$(printf 'mkdir -p %q && tar -xzf %q -C %q' "$remote_dir" "$name-code.tar.gz" "$remote_dir")" "$1"
  }
  each_node scp_node
}

setup() {  # the --env settings reach the setup too (e.g. AUDIOPALM_PYTHON, PIP_INDEX_URL)
  local cmd
  cmd="$(printf 'cd %q && ' "$remote_dir")"
  if [ ${#envs[@]} -gt 0 ]; then cmd+="env$(printf ' %q' "${envs[@]}") "; fi
  each_node ssh_all "${cmd}launch/worker.sh setup tpu"
}

start() {
  # Multi-slice workers find each other through the MEGASCALE_* variables the queued resource sets.
  local args=(start "$job" AUDIOPALM_DISTRIBUTED_AUTO=1 "${envs[@]+"${envs[@]}"}" -- "${command_args[@]}")
  each_node ssh_all "$(remote "${args[@]}")"
}

logs() { ssh_worker0 "$(remote logs "$job")"; }

case "$action" in
  create) do_create;;
  setup) sync_code; setup;;
  run) sync_code; start; logs;;
  up) do_create; sync_code; setup; start; logs;;
  logs) logs;;
  stop) each_node ssh_all "$(remote stop "$job")";;
  delete) do_delete;;
  status)
    if [ "$dry_run" = 1 ]; then show "${describe[@]}"; else echo "TPU $name: $(tpu_state)"; fi
    ssh_worker0 "$(remote status "$job")";;
esac
