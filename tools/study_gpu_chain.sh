#!/usr/bin/env bash
# The GPU study as one background chain, for a lent GPU machine that is reached by short remote calls. Every call runs
# the same line, which starts the chain where it is not running yet (a first call, or a fresh machine after the last
# one was given back), waits, and brings back what exists:
#
#   bash tools/study_gpu_chain.sh --call OUT_DIR SECONDS [TEACHER.pth]
#
# i.e. tools/gpu_job.sh setup (SHARED_DIR, default shared/ or ../shared/), start the chain as job "study" unless it
# runs or has finished, wait up to SECONDS for it, then copy STUDY_WORK/teacher.pth into OUT_DIR (once it exists)
# and pack the small files of work_dirs/gpu_jobs and STUDY_WORK* into OUT_DIR/results.tgz. The chain itself:
#
#   bash tools/study_gpu_chain.sh [TEACHER.pth]
#
# Steps, each skipped when its output exists (so a chain restarted on the same machine continues):
#   1. the study set and its infos (tools/study.py --until infos; the generator writes the same bytes every time);
#   2. the FP teacher, unless TEACHER.pth is given: session 6's two-stage recipe of
#      configs/experiments/study_learning/s_groups_bev64_stride8.py (750 iterations at the peak rate, then 700 with a
#      fresh warm-up and cosine; val NDS 0.336 / mAP 0.318 in session 6), published with tools/publish_checkpoint.py
#      as $STUDY_WORK/teacher.pth: 8.4 MiB, so a call can bring it back and later sessions start from it;
#   3. for every seed, the progressive QAT runs $PROGRESSIVE (and the PTQ sweep of the first seed's work dir), side
#      by side;
#   4. for every seed, the distillation modes $MODES branched from that seed's progressive run (tools/study.py
#      --branch), and each variant of $VARIANTS ("NAME:KEY=VALUE[,KEY=VALUE]" ...; the work dir ${wd}NAME shares the
#      seed's $PROGRESSIVE runs through hard links, and their floored configs, and runs the steps $VARIANT_STEPS
#      (default qdbev_vgd; e.g. qdbev_w4a4_vgd) with --qat-options).
# Settings (environment): STUDY_WORK (work_dirs/study), SEEDS ("0 1 2"), PROGRESSIVE ("progressive"; add
# progressive_w4a4 for the W4A4 ablation, whose MODES are qdbev_w4a4_{vgd,none,img}), MODES ("qdbev_none
# qdbev_img qdbev_vgd"; any tools/study.py step whose inputs are done, e.g. direct), VARIANTS (""), VARIANT_STEPS
# ("qdbev_vgd"), QAT_ITERS (20),
# DISTILL_ITERS (400; at 100 no mode reached the teacher, docs/results.md session 17), DIRECT_ITERS (tools/study.py's
# default: 5 x QAT_ITERS), DATA (data/synthetic/study), PTQ (1; 0 leaves out the PTQ sweep, e.g. for a teacher whose
# sweep is known); the min-bits floors are the study's (both position layers at W8A8). Progress lines start with
# "[chain] SECONDS s:".
set -u
cd "$(dirname "$0")/.."
W=${STUDY_WORK:-work_dirs/study}
D=${DATA:-data/synthetic/study}
SEEDS=${SEEDS:-0 1 2}
PROGRESSIVE=${PROGRESSIVE:-progressive}
MODES=${MODES:-qdbev_none qdbev_img qdbev_vgd}
VARIANTS=${VARIANTS:-}
VARIANT_STEPS=${VARIANT_STEPS:-qdbev_vgd}
TEACHER_CONFIG=configs/experiments/study_learning/s_groups_bev64_stride8.py
t0=$(date +%s)
stamp() { echo "[chain] $(( $(date +%s) - t0 )) s: $*"; }
J=${QDBEV_GPU_JOBS:-work_dirs/gpu_jobs}  # tools/gpu_job.sh's job files
fail() {  # stop the runs started side by side (study.py and the trainings it started) before giving up
  stamp "FAILED: $*"
  kill $(jobs -p) 2>/dev/null
  pkill -TERM -g "$(ps -o pgid= -p $$ | tr -d ' ')" -f '(^|/)python[0-9.]* tools/(study|train|ptq)[.]py' 2>/dev/null
  wait
  exit 1
}

if [ "${1:-}" = --call ]; then
  [ $# -ge 3 ] || { echo "study_gpu_chain: usage: --call OUT_DIR SECONDS [TEACHER.pth]" >&2; exit 64; }
  out=$2; secs=$3; shift 3
  bash tools/gpu_job.sh setup ${SHARED_DIR:-} > /tmp/chain_setup.log 2>&1 || { tail -n 5 /tmp/chain_setup.log; exit 1; }
  bash tools/gpu_job.sh wait 0 study > /dev/null 2>&1
  case $? in
    0) echo "[chain] finished earlier on this machine" ;;
    2) echo "[chain] running" ;;
    *) bash tools/gpu_job.sh start study env STUDY_WORK="$W" bash tools/study_gpu_chain.sh "$@" ;;
  esac
  bash tools/gpu_job.sh wait "$secs" study
  rc=$?
  grep -h '^\[chain\]' "$J/study.log" 2>/dev/null
  mkdir -p "$out"
  [ ! -f "$W/teacher.pth" ] || cp -f "$W/teacher.pth" "$out/teacher.pth"
  bash tools/gpu_job.sh pack "$out" "$J" "$W"*
  exit $rc
fi
wd() { if [ "$1" = "$(set -- $SEEDS; echo $1)" ]; then echo "$W"; else echo "${W}_s$1"; fi; }

set -f  # no globbing from here on: the --min-bits patterns below hold a '*'
python tools/study.py --work-dir "$W" --data-root "$D" --train-scenes 60 --val-scenes 6 --workers 16 --until infos \
  || fail data  # (skipped in seconds once the set exists)
stamp 'study set ready'
if [ $# -ge 1 ]; then
  if [ ! -f "$W/teacher.pth" ]; then
    mkdir -p "$W" && cp "$1" "$W/.teacher.pth.tmp" && mv "$W/.teacher.pth.tmp" "$W/teacher.pth" \
      || fail "copy the teacher $1"
  elif ! cmp -s "$1" "$W/teacher.pth"; then
    fail "$W/teacher.pth is another teacher than $1; use another STUDY_WORK"
  fi
elif [ ! -f "$W/teacher.pth" ]; then
  [ -f "$W/teacher_stage1/iter_750.pth" ] || python tools/train.py $TEACHER_CONFIG --work-dir "$W/teacher_stage1" \
    --resume --cfg-options train_cfg.max_iters=750 param_scheduler.1.end=6750 param_scheduler.1.T_max=6750 \
    train_dataloader.num_workers=14 --data-root "$D" || fail 'teacher stage 1'
  stamp 'teacher stage 1'
  # --resume continues stage 2's own checkpoints after a restart; the first time, load_from initialises it
  python tools/train.py $TEACHER_CONFIG --work-dir "$W/teacher_train" --resume --cfg-options \
    load_from="$W/teacher_stage1/iter_750.pth" train_cfg.max_iters=700 param_scheduler.0.end=50 \
    param_scheduler.1.end=700 param_scheduler.1.T_max=700 train_dataloader.num_workers=14 --data-root "$D" \
    || fail 'teacher stage 2'
  python tools/publish_checkpoint.py "$W/teacher_train" "$W/teacher.pth" || fail publish
  stamp 'teacher published'
fi

S="python tools/study.py --data-root $D --train-scenes 60 --val-scenes 6 --workers 16 --qat-batch 4 \
--teacher-from $W/teacher.pth --qat-iters ${QAT_ITERS:-20} --distill-iters ${DISTILL_ITERS:-400} --branch \
${DIRECT_ITERS:+--direct-iters $DIRECT_ITERS} \
--min-bits pts_bbox_head.transformer.reference_points=8/8 pts_bbox_head.reg_branches.*.4=8/8"
for s in $SEEDS; do  # adopt the teacher one work dir at a time, before anything runs side by side
  $S --work-dir "$(wd "$s")" --seed "$s" --only teacher > /dev/null || fail "adopt the teacher in $(wd "$s")"
done
pids=()
for s in $SEEDS; do
  $S --work-dir "$(wd "$s")" --seed "$s" --jobs "$(echo $PROGRESSIVE | wc -w)" --only $PROGRESSIVE \
    > "/tmp/chain_progressive_$s.log" 2>&1 & pids+=($!)
done
first=$(set -- $SEEDS; echo $1)
ptq=
if [ "${PTQ:-1}" != 0 ]; then $S --work-dir "$W" --seed "$first" --only ptq > /tmp/chain_ptq.log 2>&1 & ptq=$!; fi
for p in "${pids[@]}"; do wait "$p" || fail 'a progressive run (see /tmp/chain_progressive_*.log)'; done
stamp 'progressive runs'

pids=()
for s in $SEEDS; do
  w=$(wd "$s")
  n=$(echo $MODES | wc -w)
  $S --work-dir "$w" --seed "$s" --jobs "$n" --only $MODES > "/tmp/chain_modes_$s.log" 2>&1 & pids+=($!)
  for v in $VARIANTS; do
    name=${v%%:*}; opts=${v#*:}
    mkdir -p "$w$name/configs"
    for r in $PROGRESSIVE; do
      [ -d "$w$name/$r" ] || cp -al "$w/$r" "$w$name/$r"
      # the run's --min-bits config (same folder depth, so the same relative _base_), which marks it as floored
      [ ! -f "$w/configs/$r.py" ] || cp -f "$w/configs/$r.py" "$w$name/configs/$r.py"
    done
    $S --work-dir "$w$name" --seed "$s" --jobs "$(echo $VARIANT_STEPS | wc -w)" --qat-options ${opts//,/ } \
      --only $VARIANT_STEPS > "/tmp/chain_${name}_$s.log" 2>&1 & pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p" || fail 'a distillation run (see /tmp/chain_*.log)'; done
[ -z "$ptq" ] || wait "$ptq" || fail 'the PTQ sweep (see /tmp/chain_ptq.log)'
stamp 'distillation modes and variants'
