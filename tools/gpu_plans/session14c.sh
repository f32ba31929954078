# Issue 9 with the session's last device minutes: the tiny config's training dataloader at 1600x900 (scale-first
# pipeline, its 4 workers, then 12 of the host's 16 cores) and one devkit evaluation. One call:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 150 tools/gpu_plans/session14c.sh work_dirs/bench14c
ensure synth bash -c 'mkdir -p work_dirs/bench14c && cp docs/benchmarks.* work_dirs/bench14c/ \
  && python tools/create_synthetic_nuscenes.py --out /tmp/syn1600 --version v1.0-trainval --train-scenes 1 \
     --val-scenes 1 --samples-per-scene 30 --scale 1.0 --workers 16 --quiet \
  && python tools/create_data.py nuscenes --root-path /tmp/syn1600 --version v1.0-trainval > /dev/null'
ensure loading --after synth python tools/benchmark.py --device cuda --only data eval --data-root /tmp/syn1600 \
  --data-samples 40 --out-json work_dirs/bench14c/benchmarks.json --out-md work_dirs/bench14c/benchmarks.md
ensure loading12 --after-ended loading python tools/benchmark.py --device cuda --only data --data-root /tmp/syn1600 \
  --data-samples 40 --data-workers 12 --out-json work_dirs/bench14c/workers12.json
