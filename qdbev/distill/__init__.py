"""QD-BEV distillation in plain PyTorch: feature KL (Eq. 2-4), view masks and VGD (Eq. 5-6), head KD, recorders."""
from qdbev.distill.feature_kl import bev_kl, image_kl, image_kl_per_sample, temperature_softmax
from qdbev.distill.head import confidence_guided_loss, logit_kd
from qdbev.distill.losses import (BEVKLLoss, HeadFocusLoss, ImageBEVLoss, ImageKLLoss, LogitKDLoss,
                                  VGDLoss)
from qdbev.distill.recorders import (ModuleInputRecorder, ModuleOutputRecorder, RecorderManager,
                                     build_recorder, find_module)
from qdbev.distill.vgd import masked_image_loss, vgd_loss
from qdbev.distill.view_mask import view_masks

__all__ = [
    'temperature_softmax', 'image_kl', 'image_kl_per_sample', 'bev_kl', 'view_masks', 'masked_image_loss',
    'vgd_loss', 'confidence_guided_loss', 'logit_kd', 'ImageKLLoss', 'BEVKLLoss', 'ImageBEVLoss', 'VGDLoss',
    'HeadFocusLoss', 'LogitKDLoss', 'ModuleOutputRecorder', 'ModuleInputRecorder', 'RecorderManager',
    'build_recorder', 'find_module',
]
