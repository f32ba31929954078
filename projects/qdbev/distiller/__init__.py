"""QD-BEV distiller plugin: teacher/student model, its distill terms, recorders, checkpoints and hooks.

Importing registers ``QDBEVDistiller`` (mmdet3d MODELS) and ``QuantCalibrationHook`` (mmengine HOOKS).
"""
from .calibration_hook import QuantCalibrationHook
from .distill_terms import TERM_RECORDS, DistillTerms, loss_key, parse_mode
from .feature_records import FeatureRecords, neck_levels, resolve_source
from .output_replay import OutputReplay
from .qdbev_distiller import DEFAULT_RECORDERS, QDBEVDistiller
from .student_export import save_student, student_from_checkpoint, student_state_dict
from .teacher_checkpoint import TeacherCheckpointError, check_state_dict, load_teacher_state, read_state_dict
from .view_geometry import BEVGeometry, current_lidar2img

__all__ = [
    'QDBEVDistiller', 'DEFAULT_RECORDERS', 'DistillTerms', 'TERM_RECORDS', 'parse_mode', 'loss_key',
    'FeatureRecords', 'neck_levels', 'resolve_source', 'OutputReplay', 'BEVGeometry', 'current_lidar2img',
    'TeacherCheckpointError', 'read_state_dict', 'check_state_dict', 'load_teacher_state', 'QuantCalibrationHook',
    'student_state_dict', 'student_from_checkpoint', 'save_student',
]
