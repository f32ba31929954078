"""Post-training quantization sweep (the PTQ rows of QD-BEV Table 1): settings, calibration and the outputs.

Plain helpers for ``tools/ptq.py``: parse ``W/A`` settings, build the qconfig of a setting, calibrate a quantized
model on data batches with a test-mode forward, the data-free (DFQ) weight preparation, write the markdown table /
JSON / PNG of the results.
"""
import copy
import json
import os.path as osp
from itertools import islice
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from torch import nn

from qdbev.quant import (bias_correct, calibration, check_bits, cross_layer_equalize, per_channel_fallback,
                         quantize_model, relu_input_mean)

__all__ = ['parse_setting', 'parse_min_bits_rule', 'setting_qconfig', 'quantize_for_ptq', 'calibration_batches',
           'calibrate_test_mode', 'resnet_dfq_pairs', 'quantize_dfq', 'write_results']

_PLAIN_CONVS = ('torch.nn.modules.conv.Conv2d', 'mmcv.cnn.bricks.wrappers.Conv2d')


def parse_setting(text: str) -> Tuple[int, int]:
    """``'4/6'`` -> ``(4, 6)``: weight / activation bits, each in [2, 16] or 32 (float)."""
    parts = str(text).split('/')
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f'--bits: {text!r} is not W/A (e.g. 4/6; 32/32 = float)')
    w, a = int(parts[0]), int(parts[1])
    return check_bits(w, f'--bits {text} weight'), check_bits(a, f'--bits {text} activation')


def parse_min_bits_rule(text: str) -> dict:
    """``'PATTERN=W/A'`` (a ``--min-bits`` argument) -> a qconfig ``min_bits`` rule
    ``dict(modules=[PATTERN], w_bits=W, a_bits=A)``: modules matching PATTERN are never narrower than W/A."""
    pattern, sep, setting = str(text).rpartition('=')
    if not sep or not pattern:
        raise ValueError(f'--min-bits {text!r}: expected PATTERN=W/A, e.g. '
                         f'pts_bbox_head.transformer.reference_points=8/8')
    w_bits, a_bits = parse_setting(setting)
    return dict(modules=[pattern], w_bits=w_bits, a_bits=a_bits)


def setting_qconfig(base: dict, w_bits: int, a_bits: int, observer: str) -> dict:
    """``base`` (the W4A6 qconfig) with widths replaced and activation observer ``observer`` (name or dict)."""
    out = copy.deepcopy(base)
    out.update(w_bits=int(w_bits), a_bits=int(a_bits), a_observer=copy.deepcopy(observer))
    return out


def quantize_for_ptq(model: nn.Module, qconfig: dict, fallback_ratio: Optional[float] = None) -> List[str]:
    """Quantize ``model`` in place with ``qconfig``; returns the layers switched to per-channel weights.

    ``fallback_ratio`` None: as the qconfig says (no switch). Otherwise the two-pass per-channel fallback of
    :func:`qdbev.quant.per_channel_fallback`: weights start per tensor, and the layers whose per-tensor weight error
    exceeds ``fallback_ratio`` x the median layer's get a per-channel quantizer (their names are returned, sorted).
    """
    if fallback_ratio is None:
        quantize_model(model, qconfig)
        return []
    if float(fallback_ratio) <= 1.0:
        raise ValueError(f'--per-channel-fallback: the ratio to the median error must be > 1, got {fallback_ratio}')
    quantize_model(model, dict(qconfig, per_channel=False))
    return sorted(per_channel_fallback(model, float(fallback_ratio)))


def calibration_batches(runner) -> Iterator[dict]:
    """Batches of ``runner``'s train dataloader, the same ones (samples and random augmentations) on every call: a
    fresh dataloader whose workers are seeded from the runner's seed, after re-seeding this process (which draws
    the augmentations when the dataloader has no workers). Iterating ``runner.train_dataloader`` again would give
    the same samples with other photometric distortions (its persistent workers, or this process, keep their
    random state), so each PTQ row would calibrate on different data."""
    from mmengine.runner import Runner, set_random_seed
    set_random_seed(runner.seed)
    return iter(Runner.build_dataloader(runner.cfg.train_dataloader, seed=runner.seed))


def calibrate_test_mode(model: nn.Module, batches: Iterable[dict], num: int) -> int:
    """Calibrate every quantizer of ``model`` (a detector with its data preprocessor) on the first ``num``
    ``batches`` (raw dataloader batches) with test-mode forwards (``model.test_step``) inside
    :func:`qdbev.quant.calibration`. Returns the number of batches seen (> 0, or ``ValueError``)."""
    count = 0
    with calibration(model):
        for data in islice(batches, int(num)):
            model.test_step(data)
            count += 1
    if count == 0:
        raise ValueError('PTQ calibration saw no batch: the train dataloader is empty (check its ann_file)')
    state = getattr(model, 'temporal_state', None)
    if state is not None and hasattr(state, 'reset'):
        state.reset()  # evaluation starts without a previous BEV, as a fresh model does
    return count


def _plain_conv(m: nn.Module) -> bool:
    return f'{type(m).__module__}.{type(m).__qualname__}' in _PLAIN_CONVS and m.groups == 1


def resnet_dfq_pairs(model: nn.Module) -> List[Tuple[str, str, str]]:
    """``(conv_i, bn_i, conv_{i+1})`` module names inside every mmdet ResNet ``BasicBlock`` / ``Bottleneck``
    (``conv -> BN -> ReLU -> conv``, the pattern cross-layer equalization needs). Pairs with a DCN, grouped conv
    or plugin between are left out."""
    pairs = []
    for name, block in model.named_modules():
        kind = type(block).__name__
        if kind not in ('BasicBlock', 'Bottleneck') or getattr(block, 'with_plugins', False):
            continue
        convs = ['conv1', 'conv2', 'conv3'] if kind == 'Bottleneck' else ['conv1', 'conv2']
        norms = [getattr(block, 'norm1_name', 'bn1'), getattr(block, 'norm2_name', 'bn2')]
        for i in range(len(convs) - 1):
            first, second = getattr(block, convs[i], None), getattr(block, convs[i + 1], None)
            if first is not None and second is not None and _plain_conv(first) and _plain_conv(second):
                pairs.append((f'{name}.{convs[i]}', f'{name}.{norms[i]}', f'{name}.{convs[i + 1]}'))
    return pairs


def quantize_dfq(model: nn.Module, qconfig: dict, iterations: int = 4) -> List[Tuple[str, str, str]]:
    """Data-free quantization (Nagel et al. 2019) of the ResNet backbone's weights, in place, then the qconfig.

    Cross-layer equalization of :func:`resnet_dfq_pairs` (``iterations`` passes: a Bottleneck's pairs share
    ``conv2``), :func:`qdbev.quant.quantize_model` with ``qconfig`` (weights per tensor, the setting DFQ is made
    for), then bias correction of each pair's second conv with the data-free expected input
    ``E[ReLU(BN(x))]`` of :func:`qdbev.quant.relu_input_mean`. Returns the pairs; ``ValueError`` when there is none.
    Activation scales still come from calibration (BEVFormer's transformer has no BN to derive them from).
    """
    pairs = resnet_dfq_pairs(model)
    if not pairs:
        raise ValueError('DFQ: no ResNet BasicBlock/Bottleneck conv -> BN -> ReLU -> conv pair in the model '
                         '(--dfq needs an mmdet ResNet img_backbone)')
    cross_layer_equalize(model, pairs, iterations=iterations)
    quantize_model(model, dict(qconfig, per_channel=False))
    modules = dict(model.named_modules())
    for _, bn, second in pairs:
        bias_correct(modules[second], relu_input_mean(modules[bn]))
    return pairs


def _label(r: dict) -> str:
    keep = f"\n{r['keep_fp'].rsplit('.', 1)[-1]} float" if r.get('keep_fp') else ''
    return f"W{r['w_bits']}A{r['a_bits']}" + (' DFQ' if r.get('method') == 'dfq' else '') + keep


def _table(results: Sequence[dict]) -> str:
    lines = ['| W bits | A bits | observer | NDS | mAP | method |', '|---:|---:|:---|---:|---:|:---|']
    for r in results:
        method = r.get('method', 'ptq') + (f" `{r['keep_fp']}`" if r.get('keep_fp') else '')
        lines.append(f"| {r['w_bits']} | {r['a_bits']} | {r['observer']} | {r['nds']:.4f} | {r['map']:.4f} | "
                     f"{method} |")
    return '\n'.join(lines) + '\n'


def _plot(results: Sequence[dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels = [_label(r) for r in results]
    xs = list(range(len(results)))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r['nds'] for r in results], 'o-', label='NDS')
    ax.plot(xs, [r['map'] for r in results], 's-', label='mAP')
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=8 if len(labels) > 6 else None)
    ax.set_xlabel('bit width (weights / activations)')
    ax.set_ylabel('score')
    ax.set_title(f"PTQ ({results[0]['observer'] if results else ''} activation observer)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(results: List[dict], work_dir: str) -> dict:
    """Write ``ptq_table.md``, ``ptq_results.json`` (the list of {w_bits, a_bits, nds, map, observer, method}) and
    ``ptq_plot.png`` into ``work_dir``; returns their paths."""
    paths = dict(table=osp.join(work_dir, 'ptq_table.md'), json=osp.join(work_dir, 'ptq_results.json'),
                 png=osp.join(work_dir, 'ptq_plot.png'))
    with open(paths['table'], 'w') as f:
        f.write(_table(results))
    with open(paths['json'], 'w') as f:
        json.dump(results, f, indent=1)
    _plot(results, paths['png'])
    return paths
