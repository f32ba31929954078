#!/usr/bin/env bash
# Long GPU work in short remote calls: background jobs that outlive one call on a machine that stays up between calls
# (a lent GPU box reached by a per-call command runner), with the OpenMMLab stack installed once per machine.
#
#   bash tools/gpu_job.sh setup [DIR]               install mmengine/mmcv(CUDA ops)/mmdet/mmdet3d/devkit if missing
#                                                   (DIR/gpu/setup.sh; DIR defaults to shared/, then ../shared/)
#   bash tools/gpu_job.sh start NAME CMD [ARG...]   run CMD in its own session in the background; its output goes to
#                                                   work_dirs/gpu_jobs/NAME.log, its exit status to NAME.rc
#   bash tools/gpu_job.sh wait SECONDS [NAME...]    wait until the named jobs (default: all started) have ended or
#                                                   SECONDS have passed; prints each job's state and last log lines;
#                                                   exit 0 when all have ended with status 0, 1 on a failure, 2 while
#                                                   some still run, 3 at once when no job was ever started here (a
#                                                   fresh machine: the jobs of earlier calls are gone)
#   bash tools/gpu_job.sh stop [NAME...]            stop the named jobs (default: all) and their children
#   bash tools/gpu_job.sh pack OUT_DIR PATH...      OUT_DIR/results.tgz of the small files under PATH (no
#                                                   checkpoints, no data), to bring results back from the machine;
#                                                   a quoted glob ('work_dirs/study14*') is expanded when packing,
#                                                   so it finds the folders the jobs made during the call
#   bash tools/gpu_job.sh ensure NAME [--creates PATH] [--after|--after-ended DEP[,DEP...]] CMD [ARG...]
#                                                   start NAME unless it runs or has ended on this machine, or
#                                                   PATH exists (its result, brought back by an earlier call and
#                                                   carried to this machine: the job then counts as ended, status
#                                                   0, once its DEPs have ended, and a fresh machine does not run
#                                                   it again); with
#                                                   --after, the job first waits for the jobs DEP to end with status
#                                                   0 (and fails, running nothing, when one fails); with
#                                                   --after-ended, for them to end whatever their status (an order,
#                                                   not a dependency). A job's DEPs must be ensured before it. The
#                                                   job's command sees its NAME in $GPU_JOB
#   bash tools/gpu_job.sh forget NAME...            let ensure start ended jobs again (e.g. after fixing a plan line)
#   bash tools/gpu_job.sh call OUT_DIR SECONDS PLAN [PATH...]
#                                                   one remote call of a plan: setup (DIR from $SHARED_DIR), run the
#                                                   PLAN file's `ensure` lines, wait for all jobs until SECONDS after
#                                                   the call began, then pack the job logs and PATHs into OUT_DIR
#                                                   (also when a plan line failed). The same line serves
#                                                   every call: on a fresh machine (the last one given back) the
#                                                   plan starts again, on a warm one it goes on; unpack the
#                                                   results into the tree after each call and carry their folders,
#                                                   and the jobs that name them in --creates are not run again
#
# Every job runs under a guard that stops it (status 137) when the host's available memory falls under a floor
# ($QDBEV_GPU_MIN_FREE_MB, default 5 % of the host's memory), so that a job filling the memory does not take the
# machine and the call's results with it; NAME.mem holds the lowest available memory seen while it ran.
# A job has ended when its NAME.rc exists and no process of its group lives on (read from /proc; zombies do not
# count); starting a NAME that still runs is refused. The job files live in
# $QDBEV_GPU_JOBS (default work_dirs/gpu_jobs, relative to the repository root).
set -euo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."
JOBS=${QDBEV_GPU_JOBS:-work_dirs/gpu_jobs}
mkdir -p "$JOBS"

group_pids() {  # PGID -> the pids of that group's processes that are not zombies (read from /proc)
  local pgid=$1 st line fields
  for st in /proc/[0-9]*/stat; do
    { read -r line < "$st"; } 2>/dev/null || continue  # (a process that ended meanwhile)
    read -r -a fields <<< "${line##*) }"  # after the command name: state ppid pgrp ...
    if [ "${fields[2]:-}" = "$pgid" ] && [ "${fields[0]:-}" != Z ]; then st=${st#/proc/}; echo "${st%/stat}"; fi
  done
}

meminfo_mib() {  # KEY -> sets mib to /proc/meminfo's KEY in MiB (builtins only: no process per reading)
  local key value _
  while read -r key value _; do [ "$key" = "$1:" ] && break; done < /proc/meminfo
  mib=$(( value / 1024 ))
}

group_alive() {  # PGID -> status 0 while a process of that group lives
  [ -n "$(group_pids "$1")" ]
}

running() {  # NAME -> status 0 while a process of its group is alive, or, before setsid ran, the job itself
  [ -f "$JOBS/$1.pid" ] || return 1
  local pid; pid=$(cat "$JOBS/$1.pid")
  group_alive "$pid" && return 0
  [ ! -f "$JOBS/$1.rc" ] && [ -r "/proc/$pid/stat" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

names() {  # the NAMEs given, or every job started on this machine
  if [ $# -gt 0 ]; then printf '%s\n' "$@"; else for f in "$JOBS"/*.pid; do [ -e "$f" ] && basename "$f" .pid; done; fi
}

cmd=${1:-}; shift || true
case "$cmd" in
  setup)
    for s in "$@" shared ../shared; do
      if [ -f "$s/gpu/setup.sh" ]; then bash "$s/gpu/setup.sh"; exit; fi
    done
    echo "gpu_job: no gpu/setup.sh under ${1:-shared/ or ../shared/} from $(pwd); name the folder that holds it" >&2
    exit 1 ;;
  start)
    [ $# -ge 2 ] || { echo "gpu_job: usage: start NAME CMD [ARG...]" >&2; exit 64; }
    name=$1; shift
    if running "$name"; then echo "gpu_job: job $name is still running; wait for it or stop it" >&2; exit 1; fi
    rm -f "$JOBS/$name.rc"
    # setsid: the job's own process group, so that the end of the call that started it does not end it; no stdio
    # shared with the caller, whose output pipe would otherwise stay open until the job ends
    GPU_JOB=$name setsid bash -c '"$@" > "$0.log" 2>&1; echo $? > "$0.rc.tmp" && mv "$0.rc.tmp" "$0.rc"' \
      "$JOBS/$name" bash "$SELF" guard "$@" \
      < /dev/null > /dev/null 2>&1 &
    echo $! > "$JOBS/$name.pid"
    printf '%q ' "$@" > "$JOBS/$name.cmd"  # the command in its own file: a call's output stays short
    echo "gpu_job: started $name (pid $!; command in $JOBS/$name.cmd)" ;;
  wait)
    [ $# -ge 1 ] || { echo "gpu_job: usage: wait SECONDS [NAME...]" >&2; exit 64; }
    deadline=$(( $(date +%s) + $1 )); shift
    mapfile -t todo < <(names "$@")
    if [ ${#todo[@]} = 0 ] || [ ! -f "$JOBS/${todo[0]}.pid" ]; then
      echo "gpu_job: no job ${1:-}${1:+ }was started on this machine (a fresh one? jobs of earlier calls are gone)" >&2
      exit 3
    fi
    while :; do
      alive=0
      for n in "${todo[@]}"; do if running "$n"; then alive=1; fi; done
      [ $alive = 0 ] || [ "$(date +%s)" -ge $deadline ] && break
      sleep 5
    done
    status=0
    for n in "${todo[@]}"; do
      if running "$n"; then state=running; [ $status = 1 ] || status=2  # (with an rc: processes it left behind)
      elif [ -f "$JOBS/$n.rc" ]; then
        rc=$(cat "$JOBS/$n.rc"); state="ended, status $rc"; [ "$rc" = 0 ] || status=1
      else state="gone without a status (killed?)"; status=1; fi
      echo "== $n: $state"
      { tail -n 4 "$JOBS/$n.log" 2>/dev/null || true; } | cut -c1-300
    done
    exit $status ;;
  stop)
    for n in $(names "$@"); do
      if running "$n"; then kill -- "-$(cat "$JOBS/$n.pid")" && echo "gpu_job: stopped $n"; fi
    done ;;
  pack)
    [ $# -ge 2 ] || { echo "gpu_job: usage: pack OUT_DIR PATH..." >&2; exit 64; }
    out=$1; shift
    mkdir -p "$out"
    found=()
    for p in "$@"; do
      if [ -e "$p" ]; then found+=("$p"); continue; fi
      matches=(); while IFS= read -r m; do matches+=("$m"); done < <(compgen -G "$p" || true)
      if [ ${#matches[@]} -gt 0 ]; then found+=("${matches[@]}")
      else echo "gpu_job: pack: $p does not exist, skipped" >&2; fi
    done
    # files under 2 MiB (in bytes: find rounds -size -2M up to whole MiB), no checkpoints, data or temporaries; files
    # that change or vanish while a job still writes them do not stop the packing
    { [ ${#found[@]} = 0 ] || find "${found[@]}" -type f ! -name '*.pth' ! -name '*.pkl' ! -name '*.tmp' \
        -size -2097152c -print0 2>/dev/null || true; } > "$out/.pack_list"
    tar czf "$out/results.tgz.tmp" --null -T "$out/.pack_list" --ignore-failed-read --warning=no-file-changed \
      || [ $? = 1 ]
    rm -f "$out/.pack_list"
    mv "$out/results.tgz.tmp" "$out/results.tgz"
    echo "gpu_job: packed $(tar tzf "$out/results.tgz" | wc -l) files into $out/results.tgz" ;;
  ensure)
    usage="gpu_job: usage: ensure NAME [--creates PATH] [--after|--after-ended DEP[,DEP...]] CMD [ARG...]"
    [ $# -ge 2 ] || { echo "$usage" >&2; exit 64; }
    name=$1; shift
    dep=(); creates=
    while [ $# -ge 3 ]; do
      case "$1" in
        --after|--after-ended) [ ${#dep[@]} = 0 ] || break; dep=(after "$2" "${1#--after}"); shift 2 ;;
        --creates) [ -z "$creates" ] || break; creates=$2; shift 2 ;;
        *) break ;;
      esac
    done
    case "$1 $name" in --after*|--creates*|*" --after"*|*" --creates"*) echo "$usage" >&2; exit 64 ;; esac
    if running "$name"; then echo "gpu_job: $name is running"; exit 0; fi
    if [ -f "$JOBS/$name.rc" ]; then
      echo "gpu_job: $name ended earlier on this machine, status $(cat "$JOBS/$name.rc")"; exit 0
    fi
    if [ -n "$creates" ] && [ -e "$creates" ]; then  # done on an earlier machine, its result carried here
      skip="gpu_job: $name: $creates exists (an earlier call's result): not run"
      if [ ${#dep[@]} -gt 0 ]; then  # it ends when its DEPs have ended (with any status: its result is here), so
        # that the jobs after it do not start beside them (session 36: a chain forked in two and shared the GPU)
        echo "$skip (ends after ${dep[1]})"
        exec bash "$SELF" start "$name" bash "$SELF" after "${dep[1]}" -ended echo "$skip"
      fi
      echo "$skip" | tee "$JOBS/$name.log"
      echo none > "$JOBS/$name.pid"  # (no process: never running)
      echo 0 > "$JOBS/$name.rc.tmp" && mv "$JOBS/$name.rc.tmp" "$JOBS/$name.rc"
      exit 0
    fi
    if [ ${#dep[@]} -gt 0 ]; then exec bash "$SELF" start "$name" bash "$SELF" "${dep[@]}" "$@"; fi
    exec bash "$SELF" start "$name" "$@" ;;
  forget)
    [ $# -ge 1 ] || { echo "gpu_job: usage: forget NAME..." >&2; exit 64; }
    for n in "$@"; do
      if running "$n"; then echo "gpu_job: $n is running; stop it first" >&2; exit 1; fi
      rm -f "$JOBS/$n.rc" "$JOBS/$n.pid" && echo "gpu_job: forgot $n (ensure starts it again)"
    done ;;
  guard)  # (inside a job) guard CMD...: run CMD; when the host's available memory falls under the floor, stop it
    # A job that fills the host's memory leaves a lent machine unable to answer, and the call that would bring the
    # results back is lost with it. The floor: $QDBEV_GPU_MIN_FREE_MB, default 5 % of the host's memory. The lowest
    # available memory seen goes to NAME.mem (brought back with the logs).
    meminfo_mib MemTotal
    min_mb=${QDBEV_GPU_MIN_FREE_MB:-$(( mib / 20 ))}
    mem_file="$JOBS/${GPU_JOB:-guard}.mem"
    "$@" &
    child=$!
    low=
    while :; do
      meminfo_mib MemAvailable
      avail=$mib
      if [ -z "$low" ] || [ "$avail" -lt "$low" ]; then low=$avail; echo "$low MiB available at least" > "$mem_file"; fi
      if [ "$avail" -lt "$min_mb" ]; then
        echo "gpu_job: the host's available memory fell to $avail MiB (floor $min_mb MiB): the job is stopped" >&2
        read -r line < /proc/$$/stat; read -r -a fields <<< "${line##*) }"
        others=1; rounds=0
        while [ $others = 1 ] && [ $rounds -lt 50 ]; do  # the job's processes but this guard and its wrapper, until
          # none is left (the listing's own subshell is listed too, and gone when the kill comes: it does not count)
          others=0; rounds=$(( rounds + 1 ))
          for pid in $(group_pids "${fields[2]}"); do
            if [ "$pid" != $$ ] && [ "$pid" != "$PPID" ] && kill -KILL "$pid" 2> /dev/null; then others=1; fi
          done
          [ $others = 0 ] || sleep 0.2
        done
        wait "$child" 2> /dev/null || true
        exit 137
      fi
      # half a second, or less when the job ends: wait -n returns at the first of the two (so that a job's status
      # comes at once, and a plan's next job, which polls for it, does not wait a polling round longer)
      sleep 0.5 &
      timer=$!
      wait -n || true
      if ! kill -0 "$child" 2> /dev/null; then kill "$timer" 2> /dev/null || true; break; fi
    done
    wait "$child" ;;
  after)  # (inside a job) after DEP[,DEP...] [-ended] CMD...: wait for the jobs to end (with status 0), then run CMD
    IFS=, read -r -a deps <<< "$1"; any=$2; shift 2
    for dep in "${deps[@]}"; do
      while :; do rc=0; bash "$SELF" wait 600 "$dep" > /dev/null 2>&1 || rc=$?; [ $rc = 2 ] || break; done
      if [ $rc != 0 ] && { [ -z "$any" ] || [ $rc = 3 ]; }; then
        echo "gpu_job: job $dep did not end with status 0 (wait: $rc); not running: $*" >&2; exit 1
      fi
      echo "gpu_job: $dep ended (wait: $rc)"
    done
    echo "gpu_job: running: $*"
    exec "$@" ;;
  call)
    [ $# -ge 3 ] || { echo "gpu_job: usage: call OUT_DIR SECONDS PLAN [PATH...]" >&2; exit 64; }
    deadline=$(( $(date +%s) + $2 ))  # SECONDS counts from here: set-up and the plan's starts included
    out=$1; plan=$3; shift 3
    paths=("$@")
    case "$plan" in */*) ;; *) plan=./$plan ;; esac  # (source would search $PATH for a bare name)
    [ -f "$plan" ] || { echo "gpu_job: call: no plan file $plan" >&2; exit 64; }
    known=$(find "$JOBS" -maxdepth 1 -name '*.pid' | wc -l)
    if [ "$known" -eq 0 ]; then echo "gpu_job: call: a fresh machine (no job known): the plan starts from the beginning"
    else echo "gpu_job: call: a warm machine ($known jobs known)"; fi
    bash "$SELF" setup ${SHARED_DIR:-} > "$JOBS/setup.log" 2>&1 || { tail -n 5 "$JOBS/setup.log"; exit 1; }
    ensure() { bash "$SELF" ensure "$@"; }
    rc=0
    # shellcheck source=/dev/null
    ( source "$plan" ) || { rc=$?; echo "gpu_job: call: the plan $plan stopped with status $rc" >&2; }
    left=$(( deadline - $(date +%s) )); [ $left -gt 0 ] || left=0
    bash "$SELF" wait "$left" || { r=$?; [ $rc != 0 ] || rc=$r; }
    bash "$SELF" pack "$out" "$JOBS" ${paths[@]+"${paths[@]}"}
    exit $rc ;;
  *)
    sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] || [ "$cmd" = -h ] || [ "$cmd" = --help ] || exit 64 ;;
esac
