"""What BEVFormer's encoder and decoder layers share: a self-attention, a cross-attention and an FFN, each followed
by its own LayerNorm (post-norm). Each layer's ``forward`` says what the attentions attend to."""
from typing import Optional

from mmcv.cnn.bricks.transformer import FFN
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule, ModuleList
from torch import nn


class PostNormLayer(BaseModule):
    """``self_attn``, ``cross_attn``, ``ffn`` and ``norms`` (three LayerNorms of the self-attention's
    ``embed_dims``), built from their configs; the state-dict keys of BEVFormer's layers.

    Args:
        self_attn_cfg, cross_attn_cfg: registry configs of the two attentions. ffn_cfg: mmcv ``FFN`` config
            (embed_dims, feedforward_channels, ffn_drop). norm_eps: LayerNorm eps.
    """

    def __init__(self, self_attn_cfg: dict, cross_attn_cfg: dict, ffn_cfg: dict, norm_eps: float = 1e-5,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        self.self_attn = MODELS.build(self_attn_cfg)
        self.cross_attn = MODELS.build(cross_attn_cfg)
        self.ffn = FFN(**ffn_cfg)
        self.norms = ModuleList([nn.LayerNorm(self.self_attn.embed_dims, eps=norm_eps) for _ in range(3)])
