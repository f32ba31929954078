"""QD-BEV as an mmdet3d 1.x plugin.

* ``projects.qdbev.distiller``: the teacher/student ``QDBEVDistiller`` (mmdet3d MODELS), its distill terms,
  recorders, checkpoints, ``QuantCalibrationHook``;
* ``projects.qdbev.hooks``: progressive QAT (``ProgressiveQATHook``, ``GuardedOptimWrapper``).

Importing this package registers both; configs may also import the subpackages one by one, e.g.
``custom_imports=dict(imports=['projects.bevformer.bevformer', 'projects.qdbev'], allow_failed_imports=False)``.
"""
from . import distiller, hooks  # noqa: F401
