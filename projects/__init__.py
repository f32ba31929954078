"""mmdet3d/mmengine plugins of qdbev: `projects.bevformer`, `projects.qdbev`, `projects.common`."""
