"""qdbev: QD-BEV (quantization-aware view-guided distillation) core in plain PyTorch.

Sub-packages: ``qdbev.quant`` (fake quantization, observers, quantized modules, reports),
``qdbev.distill`` (image/BEV KL, view masks, VGD, recorders), ``qdbev.schedule`` (progressive QAT),
``qdbev.geometry`` (BEV pillars and their projection into the cameras). Nothing here imports OpenMMLab.
"""
__version__ = '0.1.0'
