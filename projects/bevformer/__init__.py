"""BEVFormer (Li et al. 2022) as an mmdet3d 1.x plugin: the package is ``projects.bevformer.bevformer``."""
