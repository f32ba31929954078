# Runtime shared by every qdbev config (mmengine Runner): hooks, logging, checkpoints, visualisation backends.
# tools/train.py / tools/test.py set env_cfg.dist_cfg.backend (gloo on CPU, nccl on GPU) and the NuScenesMetric
# jsonfile_prefix (inside the work dir) at launch.
default_scope = 'mmdet3d'

custom_imports = dict(imports=['projects.common', 'projects.bevformer.bevformer'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # checkpoints load with torch.load(weights_only=True) (WeightsOnlyCheckpointHook below) and are written
    # atomically (atomic_local backend, projects/common/checkpoint.py)
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_last=True,
                    backend_args=dict(backend='atomic_local')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='Det3DVisualizationHook'))

custom_hooks = [dict(type='WeightsOnlyCheckpointHook')]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'

vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Det3DLocalVisualizer', vis_backends=vis_backends, name='visualizer')

load_from = None
resume = False
