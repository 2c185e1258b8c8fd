#!/usr/bin/env bash
# The remote half of the launchers: runs on each host (a TPU worker, a GPU node), in the project's checkout.
#
# Usage: launch/worker.sh ACTION ...
#   setup ACCELERATOR              .venv with requirements.txt and JAX for ACCELERATOR: tpu, cuda12, cuda13 or cpu,
#                                  on Python 3.11/3.12 (AUDIOPALM_PYTHON, else found; else python3.11 from apt);
#                                  skipped when requirements.txt, Python and ACCELERATOR are unchanged since the last
#                                  setup
#   start JOB [KEY=VALUE ...] -- CMD ...
#                                  start CMD detached (it survives the ssh session), .venv/bin first on PATH, the
#                                  KEY=VALUEs in its environment; output to logs/JOB.log, its status to logs/JOB.exit.
#                                  A JOB still running is left alone (rerunning a launcher does not start it twice).
#   logs JOB                       stream logs/JOB.log until the job ends; exit with its status
#   stop JOB                       SIGTERM to the job's process group (training saves a checkpoint), SIGKILL after 300 s
#   status JOB                     running, ended (with its status), or never started
set -euo pipefail

cd "$(dirname "$0")/.."
die() { echo "worker.sh: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "give an action (see the header of $0)"
action="$1"; shift

job_files() {
  [ $# -ge 1 ] && [[ "$1" =~ ^[A-Za-z0-9_.-]+$ ]] || die "give the job's name (letters, digits, '_', '.', '-')"
  log="logs/$1.log"; pidfile="logs/$1.pid"; exitfile="logs/$1.exit"
}
# The job's pid and its start time (field 22 of /proc/PID/stat): after a reboot the pid may name another process.
started_at() { [ -r "/proc/$1/stat" ] && sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f20; }
running() {
  [ -f "$pidfile" ] || return 1
  local pid when
  read -r pid when < "$pidfile"
  kill -0 "$pid" 2>/dev/null && [ "$(started_at "$pid")" = "$when" ]
}
job_pid() { cut -d' ' -f1 "$pidfile"; }

case "$action" in
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0;;

  setup)
    [ $# -eq 1 ] || die "setup takes one accelerator: tpu, cuda12, cuda13 or cpu"
    accelerator="$1"
    case "$accelerator" in tpu|cuda12|cuda13|cpu) ;; *) die "unknown accelerator '$accelerator'";; esac
    # Python 3.11 or 3.12 (requirements.txt): AUDIOPALM_PYTHON, else the newest found; TPU VM images based on
    # Ubuntu 22.04 ship 3.10, so there python3.11 is installed from the distribution (apt, with sudo).
    python=""
    for candidate in "${AUDIOPALM_PYTHON:-}" python3.12 python3.11 python3; do
      if [ -n "$candidate" ] && command -v "$candidate" >/dev/null \
          && "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))'; then
        python="$candidate"; break
      fi
    done
    if [ -z "$python" ]; then
      command -v apt-get >/dev/null || die "needs Python 3.11 or 3.12: install one and set AUDIOPALM_PYTHON"
      echo "worker.sh: $(hostname): no Python 3.11/3.12; installing python3.11 with apt"
      # A fresh VM's unattended upgrades may hold the dpkg lock for minutes: wait for it.
      sudo apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
      sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q python3.11 \
        python3.11-venv >/dev/null
      python=python3.11
    fi
    stamp="$accelerator $("$python" -c 'import sys; print("py%d.%d" % sys.version_info[:2])') $(sha256sum requirements.txt | cut -c1-16)"
    if [ -f .venv/.audiopalm-setup ] && [ "$(cat .venv/.audiopalm-setup)" = "$stamp" ]; then
      echo "worker.sh: $(hostname): already set up ($stamp)"; exit 0
    fi
    "$python" -m venv --clear .venv
    .venv/bin/pip install -q -r requirements.txt
    if [ "$accelerator" != cpu ]; then
      # The accelerator's jaxlib plugin at exactly the JAX version requirements.txt resolved to.
      version=$(.venv/bin/python -c 'import jax; print(jax.__version__)')
      .venv/bin/pip install -q "jax[$accelerator]==$version"
    fi
    echo "$stamp" > .venv/.audiopalm-setup
    echo "worker.sh: $(hostname): set up for $accelerator ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))";;

  start)
    job_files "$@"; shift
    envs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
      [[ "$1" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "'$1' is not KEY=VALUE"
      envs+=("$1"); shift
    done
    [ $# -ge 2 ] && [ "$1" = "--" ] || die "give the command after --"
    shift
    mkdir -p logs
    if running; then echo "worker.sh: $(hostname): $log is already running (pid $(job_pid)); not starting it again"; exit 0; fi
    rm -f "$exitfile"
    echo "=== $(date -u +%FT%TZ) $(hostname): $*" >> "$log"
    # setsid: the job leads its own process group (stop signals all of it) and outlives this ssh session. The
    # wrapping shell outlasts a SIGTERM (its trap is not inherited) to record the job's status.
    # shellcheck disable=SC2016  # the single-quoted script is expanded by the inner bash, not here
    PATH="$PWD/.venv/bin:$PATH" setsid nohup env "${envs[@]+"${envs[@]}"}" bash -c \
      'trap : TERM INT; "$@"; status=$?; echo "$status" > "$0"; exit "$status"' "$exitfile" "$@" >> "$log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid $(started_at "$pid")" > "$pidfile"
    echo "worker.sh: $(hostname): started $1 (pid $pid, log $PWD/$log)";;

  logs)
    job_files "$@"
    [ -f "$log" ] || die "no job $1 on $(hostname)"
    tail -n 200 -F "$log" & tailer=$!
    while running; do sleep 5; done
    sleep 2; kill "$tailer" 2>/dev/null || true
    [ -f "$exitfile" ] || die "job $1 ended without a status (killed?)"
    exit "$(cat "$exitfile")";;

  stop)
    job_files "$@"
    if ! running; then echo "worker.sh: $(hostname): job $1 is not running"; exit 0; fi
    pid=$(job_pid)
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 300); do running || { echo "worker.sh: $(hostname): job $1 stopped"; exit 0; }; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "worker.sh: $(hostname): job $1 killed after 300 s";;

  status)
    job_files "$@"
    if running; then echo "$(hostname): job $1 running (pid $(job_pid))"
    elif [ -f "$exitfile" ]; then echo "$(hostname): job $1 ended with status $(cat "$exitfile")"
    else echo "$(hostname): job $1 never started here (or was killed)"; fi;;

  *) die "unknown action '$action'";;
esac
