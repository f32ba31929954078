"""QD-BEV as an mmdet3d 1.x plugin: ``projects.qdbev.distiller`` (teacher/student distiller, its hooks).

Configs import it with ``custom_imports=dict(imports=['projects.bevformer.bevformer', 'projects.qdbev.distiller'],
allow_failed_imports=False)``.
"""
