"""qdbev.quant: fake quantization for the QD-BEV student (plain PyTorch, no OpenMMLab import).

Pieces, one job each (see docs/quantization.md):
    fake_quant      QD-BEV Eq. 1 (``fake_quantize``, ``symmetric_scale``) with STE / LSQ gradients
    observers       watch tensors, propose Eq. 1's clip: minmax, ema, percentile, mse, entropy
    fake_quantizer  ``FakeQuantizer``: bits + observer + scale + mode
    modules         ``QuantConv2d``, ``QuantLinear``, ``QuantMultiheadAttention``
    transforms      ``quantize_model``, ``set_bits``, ``calibration``, ``quant_state`` / ``load_quant_state``
    report          params, size, MACs, BOPS per layer / stage / total
    pack            int4 / int8 weight packing and unpacking
    dfq             data-free quantization baseline (cross-layer equalization, bias correction)
    analysis        per-layer errors, per-channel fallback, scale conflicts
    compile         ``compile_quantized``: torch.compile during QAT, eager while quantizers observe;
                    ``SavedActivations``: what the compiled graphs keep for backward; ``compile_module``:
                    a float part compiled for training, CUDA-graph modes included, or with its weights as
                    constants (``freezing``, ``FrozenWeightsCall``: the frozen teacher); ``compile_callable``:
                    the same for a function of the training step
    cudagraph_check ``CudaGraphCheck``: whether CUDA graphs (mode reduce-overhead) would replay the compiled
                    graphs, read on any device (imported on its own: it registers a dynamo backend)
"""
from .analysis import (find_scale_conflicts, layer_weight_errors, per_channel_fallback, record_activation_ranges,
                       weight_quant_error)
from .compile import (CUDA_GRAPH_MODES, QUANTIZED_OPTIONS, CompiledWhenCalibrated, FrozenWeightsCall,
                      NoGradOutputsCopied, SavedActivations, allow_recompiles, compile_callable, compile_module,
                      compile_quantized, freezing, memory_budget, module_slot, named_parts, quantizer_guard_filter,
                      replays_cuda_graphs, with_guard_filter)
from .dfq import bias_correct, cross_layer_equalize, relu_input_mean
from .fake_quant import (FLOAT_BITS, check_bits, fake_quantize, fake_quantize_reference, qrange, quantize_codes,
                         scale_from_absmax, symmetric_scale)
from .fake_quantizer import MODES, FakeQuantizer, QuantizerStandIn
from .modules import QuantConv2d, QuantLinear, QuantModule, QuantMultiheadAttention
from .observers import (OBSERVERS, EMAMinMaxObserver, EntropyObserver, MinMaxObserver, MSEObserver, Observer,
                        PercentileObserver, build_observer, register_observer)
from .pack import pack_state, packed_nbytes, unpack_state
from .report import MAC_ESTIMATORS, format_report, register_mac_estimator, report
from .transforms import (DEFAULT_QCONFIG, calibration, check_qconfig, load_quant_state, quant_layers, quant_state,
                         module_matches, quantize_model, quantizers, set_bits, set_mode, stage_of)

__all__ = [
    # Eq. 1
    'FLOAT_BITS', 'check_bits', 'qrange', 'scale_from_absmax', 'symmetric_scale', 'fake_quantize',
    'fake_quantize_reference', 'quantize_codes',
    # observers
    'Observer', 'MinMaxObserver', 'EMAMinMaxObserver', 'PercentileObserver', 'MSEObserver', 'EntropyObserver',
    'OBSERVERS', 'register_observer', 'build_observer',
    # quantizer and layers
    'MODES', 'FakeQuantizer', 'QuantizerStandIn', 'QuantModule', 'QuantConv2d', 'QuantLinear',
    'QuantMultiheadAttention',
    # model transforms
    'DEFAULT_QCONFIG', 'check_qconfig', 'quantize_model', 'quant_layers', 'quantizers', 'set_bits', 'set_mode',
    'calibration', 'quant_state', 'load_quant_state', 'stage_of', 'module_matches',
    # report
    'report', 'format_report', 'register_mac_estimator', 'MAC_ESTIMATORS',
    # packing
    'pack_state', 'unpack_state', 'packed_nbytes',
    # DFQ
    'cross_layer_equalize', 'bias_correct', 'relu_input_mean',
    # analysis
    'weight_quant_error', 'layer_weight_errors', 'per_channel_fallback', 'record_activation_ranges',
    'find_scale_conflicts',
    # torch.compile during QAT
    'CompiledWhenCalibrated', 'compile_quantized', 'module_slot', 'named_parts', 'memory_budget', 'SavedActivations',
    'allow_recompiles', 'compile_callable', 'compile_module', 'NoGradOutputsCopied', 'CUDA_GRAPH_MODES',
    'replays_cuda_graphs', 'quantizer_guard_filter', 'with_guard_filter', 'QUANTIZED_OPTIONS',
    'freezing', 'FrozenWeightsCall',
]
