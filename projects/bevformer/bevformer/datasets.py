"""BEVFormer's temporal-queue nuScenes dataset (mmdet3d 1.x).

For sample ``i`` the dataset runs the current frame and ``queue_length - 1`` previous frames of the same scene
through the same pipeline and joins them into ONE packed sample (the qdbev data <-> model interface):

* ``inputs['img']``: ``[T * N_cam, 3, H, W]``, frames oldest first, the current frame last;
* ``data_samples``: the current frame's ``Det3DDataSample`` (ground truth, metainfo) with ``queue_metas``, one dict
  per previous frame (``lidar2img``, ``can_bus``, ``scene_token``, ``frame_idx``, ``img_shape``, ``token``).

The dataset only supplies absolute per-frame data; the model owns the temporal logic (can_bus deltas, prev_bev).
Previous frames are drawn as in BEVFormer: ``queue_length - 1`` of the ``queue_length`` preceding list entries,
at random, in time order. Entries before the scene's first frame are not emitted: the scene's first frame
takes their place (so every frame of a queue has the current frame's scene token). Test mode: no queue (T = 1).
"""
import copy
import os.path as osp
import random
from typing import Dict, Iterator, List, Optional, Sequence, Sized

import numpy as np
import torch
from mmdet3d.datasets import NuScenesDataset
from mmdet3d.registry import DATA_SAMPLERS, DATASETS
from mmengine.dist import get_dist_info
from torch.utils.data import Sampler

from projects.common.nuscenes_infos import INFO_FORMAT

BEVFORMER_FIELDS = ('scene_token', 'frame_idx', 'can_bus')
QUEUE_META_KEYS = ('lidar2img', 'can_bus', 'scene_token', 'frame_idx', 'img_shape', 'token')


def check_lidar2img(lidar2img: np.ndarray, where: str, cameras: Sequence[str]) -> None:
    """Refuse projections ``[N_cam, 4, 4]`` that are non-finite or singular (rank < 4: a degenerate extrinsic or
    intrinsic), naming ``where`` and the camera."""
    if lidar2img.shape[1:] != (4, 4) or not np.isfinite(lidar2img).all():
        bad = [c for c, m in zip(cameras, lidar2img) if m.shape != (4, 4) or not np.isfinite(m).all()]
        raise ValueError(f'{where}: images.{bad[0]}.lidar2img is non-finite or not 4x4; fix the calibration in the '
                         f'nuScenes tables and regenerate the infos with tools/create_data.py')
    ranks = np.linalg.matrix_rank(lidar2img)  # batched SVD, [N_cam]
    if (ranks < 4).any():
        cam = cameras[int(np.argmax(ranks < 4))]
        raise ValueError(f'{where}: images.{cam}.lidar2img is singular (degenerate extrinsic or intrinsic); fix '
                         f'the calibration and regenerate the infos with tools/create_data.py')


def queue_indices(index: int, queue_length: int, scene_first: int, rng=random) -> List[int]:
    """List indices of one training queue, oldest first, ``index`` last (BEVFormer's ``prepare_train_data``).

    ``queue_length - 1`` previous indices are drawn without replacement from ``[index - queue_length, index)``
    and sorted; indices before ``scene_first`` (the list index of the scene's first frame) become
    ``scene_first``. Returns ``queue_length`` indices.
    """
    if queue_length < 1:
        raise ValueError(f'queue_length must be >= 1, got {queue_length}')
    candidates = list(range(index - queue_length, index))
    rng.shuffle(candidates)
    previous = sorted(candidates[1:])
    return [max(i, scene_first) for i in previous] + [index]


def join_queue(frames: Sequence[dict]) -> dict:
    """Join packed frames (each ``Pack3DDetInputs`` output, oldest first) into one packed sample.

    Returns ``dict(inputs=dict(img=[T * N_cam, 3, H, W]), data_samples=current)`` where ``current`` is the last
    frame's data sample with metainfo ``queue_metas`` (``QUEUE_META_KEYS`` of the T - 1 previous frames).
    """
    imgs = [f['inputs']['img'] for f in frames]
    shapes = {tuple(img.shape) for img in imgs}
    if len(shapes) != 1:
        raise ValueError(f'BEVFormerNuScenesDataset: the frames of a queue have different image tensor shapes '
                         f'{sorted(shapes)}; the pipeline must give every frame the same size')
    current = frames[-1]['data_samples']
    queue_metas = []
    for f in frames[:-1]:
        meta = f['data_samples'].metainfo
        queue_metas.append({k: meta[k] for k in QUEUE_META_KEYS if k in meta})
    current.set_metainfo(dict(queue_metas=queue_metas))
    inputs = dict(frames[-1]['inputs'])
    inputs['img'] = torch.cat(imgs, dim=0) if len(imgs) > 1 else imgs[0]
    return dict(inputs=inputs, data_samples=current)


@DATASETS.register_module()
class BEVFormerNuScenesDataset(NuScenesDataset):
    """mmdet3d's ``NuScenesDataset`` with BEVFormer's temporal queue (see the module docstring).

    Args:
        queue_length: frames per training sample, the current one included (BEVFormer-tiny/small 3, base 4).
        **kwargs: ``NuScenesDataset`` arguments (``ann_file`` from tools/create_data.py, ``data_prefix``,
            ``pipeline``, ``modality``, ``metainfo``, ``test_mode`` ...).
    """

    # mmengine lets the class METAINFO win over the info file's metainfo: leave 'version' out so that the file's
    # (v1.0-mini / v1.0-trainval, read by NuScenesMetric) is used unless the config's metainfo sets one
    METAINFO = {k: v for k, v in NuScenesDataset.METAINFO.items() if k != 'version'}

    def __init__(self, queue_length: int = 4, **kwargs) -> None:
        if int(queue_length) < 1:
            raise ValueError(f'BEVFormerNuScenesDataset: queue_length must be >= 1, got {queue_length}')
        self.queue_length = int(queue_length)
        self._scene_first: Optional[np.ndarray] = None
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ loading
    def parse_data_info(self, info: dict) -> dict:
        """Refuse infos without the BEVFormer fields; add ``can_bus`` (``[18]`` float64), ``num_cams`` and
        ``lidar2img`` (``[N_cam, 4, 4]``, original image size, cameras in the order of ``images``)."""
        token = info.get('token', '?')
        missing = [key for key in BEVFORMER_FIELDS if key not in info]
        missing += [f'images.{cam}.lidar2img'
                    for cam, cam_info in info.get('images', {}).items() if 'lidar2img' not in cam_info]
        if missing:
            raise ValueError(f'{self.ann_file}: sample {token} has no {missing[0]}: not a BEVFormer info file; '
                             f'make one with tools/create_data.py nuscenes --root-path DATA_ROOT --version VERSION')
        can_bus = np.asarray(info['can_bus'], dtype=np.float64)
        if can_bus.shape != (18, ):
            raise ValueError(f'{self.ann_file}: sample {token} has can_bus of shape {can_bus.shape}, expected (18,); '
                             f'regenerate the infos with tools/create_data.py')
        info = super().parse_data_info(info)
        info['can_bus'] = can_bus
        info['frame_idx'] = int(info['frame_idx'])
        info['num_cams'] = len(info['images'])
        info['lidar2img'] = np.stack([np.asarray(cam_info['lidar2img'], dtype=np.float64)
                                      for cam_info in info['images'].values()])
        check_lidar2img(info['lidar2img'], f'{self.ann_file}: sample {token}', list(info['images']))
        return info

    def _check_ann_file(self) -> None:
        """One-line errors for a missing data root or info file, before mmengine opens it."""
        if osp.isfile(self.ann_file) or '://' in str(self.ann_file):
            return
        folder = osp.dirname(self.ann_file)
        if not osp.isdir(folder):
            raise FileNotFoundError(f'{self.ann_file}: data root {folder} does not exist; set data_root in the config '
                                    f'(or --cfg-options data_root=...) to a folder made by tools/create_data.py')
        raise FileNotFoundError(f'{self.ann_file}: info file not found; make it with tools/create_data.py nuscenes '
                                f'--root-path {folder} --version VERSION')

    def load_data_list(self) -> List[dict]:
        """Infos sorted by scene (first appearance in the file) and ``frame_idx``; duplicated frames refused, as are
        files of another converter (mmdet3d 0.x / BEVFormer's own ``infos``+``metadata`` layout, another
        ``info_format``)."""
        self._check_ann_file()
        try:
            data_list = super().load_data_list()
        except (TypeError, ValueError) as err:
            if 'Annotation' not in str(err) and 'annotation' not in str(err):
                raise
            raise ValueError(f'{self.ann_file}: not an mmdet3d 1.x info file (no data_list/metainfo; made by another '
                             f'converter version?); regenerate it with tools/create_data.py') from None
        info_format = self.metainfo.get('info_format')
        if info_format is not None and info_format != INFO_FORMAT:
            raise ValueError(f'{self.ann_file}: info_format {info_format!r}, this code reads {INFO_FORMAT!r}; '
                             f'regenerate the infos with tools/create_data.py')
        scene_rank: Dict[str, int] = {}
        for info in data_list:
            scene_rank.setdefault(info['scene_token'], len(scene_rank))
        data_list.sort(key=lambda e: (scene_rank[e['scene_token']], e['frame_idx']))
        for a, b in zip(data_list[:-1], data_list[1:]):
            if a['scene_token'] == b['scene_token'] and a['frame_idx'] == b['frame_idx']:
                raise ValueError(f'{self.ann_file}: scene {a["scene_token"]} has two samples with frame_idx '
                                 f'{a["frame_idx"]}; regenerate the infos with tools/create_data.py')
        return data_list

    def full_init(self) -> None:
        """mmengine's initialisation, then the list index of each sample's scene start (for the queue)."""
        if self._fully_initialized:
            return
        super().full_init()
        scenes = [self.get_data_info(i)['scene_token'] for i in range(len(self))]
        first = np.zeros(len(scenes), dtype=np.int64)
        for i in range(1, len(scenes)):
            first[i] = first[i - 1] if scenes[i] == scenes[i - 1] else i
        self._scene_first = first

    def scene_first(self, index: int) -> int:
        """List index of the first frame of ``index``'s scene."""
        if self._scene_first is None:
            self.full_init()
        return int(self._scene_first[index])

    # ------------------------------------------------------------------ samples
    def pipeline_frame(self, index: int) -> Optional[dict]:
        """Frame ``index`` alone through the pipeline, never filtered (a previous frame of a queue, whose ground truth
        is not used; tools/hit_lists.py)."""
        input_dict = copy.deepcopy(self.get_data_info(index))
        input_dict['box_type_3d'] = self.box_type_3d
        input_dict['box_mode_3d'] = self.box_mode_3d
        return self.pipeline(input_dict)

    def prepare_data(self, index: int) -> Optional[dict]:
        """The packed queue of sample ``index`` (T = 1 in test mode). None (mmengine then draws another index)
        when the current frame has no ground truth left and ``filter_empty_gt`` is set."""
        current = super().prepare_data(index)
        if current is None:
            return None
        if self.test_mode or self.queue_length == 1:
            return join_queue([current])
        indices = queue_indices(index, self.queue_length, self.scene_first(index))
        frames = []
        for i in indices[:-1]:
            frame = self.pipeline_frame(i)
            if frame is None:
                return None
            frames.append(frame)
        return join_queue(frames + [current])


@DATA_SAMPLERS.register_module()
class ContiguousSampler(Sampler):
    """Test-time sampler that gives each process one contiguous run of the (scene-sorted) dataset, in order.

    BEVFormer's test keeps the previous BEV across consecutive frames of a scene, so each process must see
    consecutive frames: process ``r`` of ``W`` gets indices ``[r * n // W, (r + 1) * n // W)``. No index is padded
    or repeated; mmengine's result collection (``zip_longest`` of the parts, then ``[:n]``) keeps every result and
    ``NuScenesMetric`` matches them to samples by ``sample_idx``, so the order across processes does not matter.
    One process: ``0 .. n-1`` in order (mmengine's ``DefaultSampler(shuffle=False)``).
    """

    def __init__(self, dataset: Sized, seed: Optional[int] = None, rank: Optional[int] = None,
                 world_size: Optional[int] = None) -> None:
        dist_rank, dist_world = get_dist_info()
        rank = dist_rank if rank is None else rank
        world_size = dist_world if world_size is None else world_size
        n = len(dataset)
        self.start = rank * n // world_size
        self.stop = (rank + 1) * n // world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start

    def set_epoch(self, epoch: int) -> None:
        """Nothing is shuffled; present for mmengine's loops."""
