# shellcheck shell=bash
# Shared helpers for scripts/cluster and scripts/zk. Source it; do not run it.

PODKEEPER_ROOT="${PODKEEPER_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PODKEEPER_TOOLS_BIN="${PODKEEPER_TOOLS_BIN:-${PODKEEPER_TOOLS_DIR:-$PODKEEPER_ROOT/.cache/tools}/bin}"

_PK_T0="${EPOCHREALTIME:-$SECONDS}"

# Seconds since the script started, with one decimal.
pk_elapsed() {
  local now="${EPOCHREALTIME:-$SECONDS}"
  awk -v a="$_PK_T0" -v b="$now" 'BEGIN { printf "%.1f", b - a }'
}

# log <component> <message...>  (progress to stderr with elapsed time)
pk_log() {
  local who="$1"; shift
  printf '%s: [%5ss] %s\n' "$who" "$(pk_elapsed)" "$*" >&2
}

pk_die() {
  printf '%s: error: %s\n' "${PK_NAME:-podkeeper}" "$*" >&2
  exit 1
}

# pk_wait_until <timeout seconds> <interval seconds> <command...>
# Polls the command until it succeeds; returns 1 on timeout.
pk_wait_until() {
  local timeout="$1" interval="$2"; shift 2
  local deadline=$(( SECONDS + timeout ))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || return 1
    sleep "$interval"
  done
}

# True if something accepts TCP connections on 127.0.0.1:<port>.
pk_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True if nothing listens on <port> (TIME_WAIT leftovers do not count).
pk_port_free() {
  local p="$1"
  if command -v ss >/dev/null 2>&1; then
    ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .
  else
    ! pk_port_open "$p"
  fi
}

# pk_free_port <preferred> [exclude...]: the preferred port if free, else the
# next free one above it (excluded ports are skipped).
pk_free_port() {
  local p="$1"; shift
  local limit=$(( p + 200 ))
  while (( p < limit )); do
    if pk_port_free "$p" && [[ " $* " != *" $p "* ]]; then
      echo "$p"; return 0
    fi
    p=$(( p + 1 ))
  done
  return 1
}

# --- daemons: one process group per component, pid in <piddir>/<name>.pid ---

# pk_pid <piddir> <name>: prints the pid if the daemon runs.
pk_pid() {
  local f="$1/$2.pid" pid started
  [[ -f "$f" ]] || return 1
  read -r pid started <"$f" || true
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  # A pid file outlives a reboot, and its pid may then be an unrelated process: the start time
  # written beside it must match too (files without one, from older scripts, are trusted).
  [[ -z "$started" || "$(pk_started "$pid")" == "$started" ]] || return 1
  echo "$pid"
}

# pk_started <pid>: the process's start time in clock ticks since boot (/proc/<pid>/stat field
# 22), empty when it is gone. With the boot it tells one process from a later one with its pid.
pk_started() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  # Fields after the command name, which may hold spaces, start at ") ".
  awk '{ print $20 }' <<<"${stat##*) }"
}

# pk_start <piddir> <logfile> <name> <command...>
# Starts the command detached in its own session (= process group), stdin
# from /dev/null, stdout+stderr appended to the log file.
pk_start() {
  local piddir="$1" logfile="$2" name="$3"; shift 3
  mkdir -p "$piddir" "$(dirname "$logfile")"
  printf '\n==== %s starting %s: %s\n' "$(date -u +%FT%TZ)" "$name" "$*" >>"$logfile"
  # fds 8/9 are lock fds of our scripts: the daemon must not keep them.
  setsid "$@" </dev/null >>"$logfile" 2>&1 8>&- 9>&- &
  echo "$! $(pk_started $!)" >"$piddir/$name.pid"
}

# pk_stop <piddir> <name> [timeout seconds, default 10]
# SIGTERM to the process group, wait up to the deadline, then SIGKILL.
pk_stop() {
  local piddir="$1" name="$2" timeout="${3:-10}" pid
  local f="$piddir/$name.pid"
  [[ -f "$f" ]] || return 0
  # Only the process this file names: the same pid and start time (see pk_pid).
  pid="$(pk_pid "$piddir" "$name")" || pid=""
  if [[ -n "$pid" ]]; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(( SECONDS + timeout ))
    while kill -0 -- "-$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
    if kill -0 -- "-$pid" 2>/dev/null; then
      pk_log "${PK_NAME:-podkeeper}" "$name (pid $pid) did not stop in ${timeout}s, sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$f"
}
