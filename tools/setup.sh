#!/usr/bin/env bash
# Installs qdbev's stack into a project-local virtual environment (.venv, or $QDBEV_VENV).
# Idempotent: a second run checks the imports and exits in seconds.
# Order matters: torch first, mmcv 2.1.0 compiled with its ops against that torch
# (--no-build-isolation, setuptools<70), then mmdet/mmdet3d (mmdet3d without open3d, which nothing here uses).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${QDBEV_VENV:-$root/.venv}
py=$venv/bin/python
check='import torch, numpy, mmengine, mmcv.ops, mmdet, mmdet3d.models, mmdet3d.datasets, mmdet3d.evaluation, nuscenes, pyquaternion, pytest, onnxruntime'
if [ -x "$py" ] && "$py" -c "$check" >/dev/null 2>&1; then
  echo "qdbev setup: $venv is complete"
  exit 0
fi
[ -x "$py" ] || python3 -m venv "$venv"
pip_() { "$py" -m pip install --disable-pip-version-check -q "$@"; }
echo "qdbev setup: installing torch (CPU) and build tools into $venv"
pip_ "setuptools<70" wheel ninja packaging
pip_ torch==2.13.0 "numpy>=1.26,<2"
pip_ mmengine==0.10.7 nuscenes-devkit==1.2.0 pyquaternion pytest "opencv-python-headless<4.11" \
     scipy matplotlib "shapely~=2.0.3" numba networkx scikit-image tensorboard pycocotools terminaltables \
     lyft_dataset_sdk plyfile trimesh tqdm onnx onnxruntime "numpy>=1.26,<2"
if ! "$py" -c "import mmcv.ops" >/dev/null 2>&1; then
  echo "qdbev setup: building mmcv 2.1.0 with its CPU ops (about 8 minutes the first time; pip caches the wheel)"
  pip_ "setuptools<70" wheel ninja   # torch's install may have upgraded setuptools; mmcv 2.1.0's setup.py needs <70
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} pip_ --no-build-isolation mmcv==2.1.0
fi
pip_ mmdet==3.2.0 "numpy>=1.26,<2"
pip_ --no-deps mmdet3d==1.4.0
"$py" -c "$check"
echo "qdbev setup: done ($("$py" -c 'import torch, mmcv, mmdet, mmdet3d; print("torch", torch.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmdet3d", mmdet3d.__version__)'))"
