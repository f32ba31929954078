"""Synthetic nuScenes: a data set with the exact nuScenes layout and tables that a camera-only detector can learn.

A procedural city per location (street grid, buildings, textured ground), an ego drive along its lanes, actors of
the ten detection classes, six rendered cameras, a ray-cast LIDAR_TOP and CAN-bus poses, written as nuScenes
v1.0 tables that nuscenes-devkit and mmdet3d's converter load unmodified. Plain numpy/opencv; no OpenMMLab.

Entry point: :func:`generate_dataset` (CLI: ``tools/create_synthetic_nuscenes.py``).
"""
from .generate import DatasetConfig, SynthConfigError, generate_dataset, split_scene_names, validate

__all__ = ['DatasetConfig', 'SynthConfigError', 'generate_dataset', 'split_scene_names', 'validate']
