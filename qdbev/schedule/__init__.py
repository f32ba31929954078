"""Progressive quantization-aware training as data: phases, schedules, plateau and stability state machines."""
from qdbev.schedule.factories import direct_qat, progressive_no_distill, qdbev_default
from qdbev.schedule.phase import (DISTILL_TERMS, STAGES, LRPolicy, Phase, UntilPlateau, normalise_distill,
                                  until_plateau)
from qdbev.schedule.plateau import PlateauTracker
from qdbev.schedule.schedule import Schedule
from qdbev.schedule.stability import GuardDecision, StabilityGuard

__all__ = ['STAGES', 'DISTILL_TERMS', 'Phase', 'LRPolicy', 'UntilPlateau', 'until_plateau', 'normalise_distill',
           'Schedule', 'qdbev_default', 'direct_qat', 'progressive_no_distill', 'PlateauTracker',
           'StabilityGuard', 'GuardDecision']
