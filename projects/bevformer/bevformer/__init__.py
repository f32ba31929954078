"""BEVFormer for mmdet3d 1.x: importing this package registers every component (configs use
``custom_imports=dict(imports=['projects.bevformer.bevformer'], allow_failed_imports=False)``)."""
# model side
from . import (bevformer, bevformer_head, box_coder, decoder, decoder_cross_attention,  # noqa: F401
               deformable_attention_3d, encoder, group_assigner, mac_estimators, match_cost, multihead_attention,
               perception_transformer, spatial_cross_attention, temporal_self_attention)
from .bevformer import BEVFormer  # noqa: F401
from .bevformer_head import BEVFormerHead  # noqa: F401
from .temporal_state import TemporalState  # noqa: F401
# data side
from . import datasets, transforms  # noqa: F401
from .datasets import BEVFormerNuScenesDataset, ContiguousSampler  # noqa: F401
from .transforms import ScaleMultiViewImage  # noqa: F401
