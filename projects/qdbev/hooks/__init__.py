"""Progressive quantization-aware training under mmengine (QD-BEV "Progressive quantization-aware training").

Importing registers ``ProgressiveQATHook`` and ``FaultInjectionHook`` (mmengine HOOKS) and ``GuardedOptimWrapper``
(mmengine OPTIM_WRAPPERS). Configs import it with ``custom_imports=dict(imports=[..., 'projects.qdbev.hooks'])``.
"""
from .fault_injection import FaultInjectionHook
from .guarded_optim_wrapper import GuardedOptimWrapper
from .phase_log import PhaseLog
from .phase_lr import phase_lr_factor, set_group_lrs
from .phase_plan import PhasePlan, PhaseSpan
from .progressive_qat_hook import STATE_KEY, ProgressiveQATHook, file_sha256, pick_metric
from .rank_sync import check_ranks_agree, state_digests
from .schedule_config import FACTORIES, build_schedule, ptq
from .stage_calibration import calibrate_stages, stage_quantizers

__all__ = [
    'ProgressiveQATHook', 'GuardedOptimWrapper', 'FaultInjectionHook', 'STATE_KEY', 'PhasePlan', 'PhaseSpan',
    'PhaseLog', 'build_schedule', 'FACTORIES', 'ptq', 'phase_lr_factor', 'set_group_lrs', 'calibrate_stages',
    'stage_quantizers', 'state_digests', 'check_ranks_agree', 'file_sha256', 'pick_metric',
]
