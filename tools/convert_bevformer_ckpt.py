"""Convert a checkpoint released by the official BEVFormer repository (fundamentalvision/BEVFormer, mmcv 1.x /
mmdet3d 0.17) into this plugin's module tree and box convention.

    python tools/convert_bevformer_ckpt.py bevformer_tiny_epoch_24.pth ckpts/bevformer_tiny_qdbev.pth \
        [--config configs/bevformer/bevformer_tiny.py] [--strict] [--trust-pickle]

What changes:
* module names: encoder/decoder ``attentions.0`` -> ``self_attn``, ``attentions.1`` -> ``cross_attn``,
  ``ffns.0`` -> ``ffn``; the decoder self-attention's packed ``attn.in_proj_weight/bias`` is split into
  ``q_proj``/``k_proj``/``v_proj``; ``attn.out_proj`` -> ``out_proj``;
* box convention (mmdet3d 0.17 -> 1.x): the last layer of every regression branch is re-ordered so the code
  becomes ``[cx, cy, log l, log w, cz, log h, sin yaw, cos yaw, vx, vy]`` (slots 2/3 swapped,
  ``sin yaw = -cos yaw_old``, ``cos yaw = -sin yaw_old``), see ``projects/bevformer/bevformer/box_coder.py``;
* ``pts_bbox_head.code_weights`` (a constant) is dropped; everything else keeps its name.

Keys no rule covers are reported (and make ``--strict`` fail). With ``--config`` the converted weights are also
loaded into the model built from that config, reporting missing / unexpected keys and shape mismatches.
The output is written atomically (temporary file + rename).
"""
import argparse
import io
import os
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# new code slot i <- sign * old slot OLD_SLOT[i] (kept in sync with box_coder.OLD_SLOT / OLD_SIGN, tested)
OLD_SLOT = (0, 1, 3, 2, 4, 5, 7, 6, 8, 9)
OLD_SIGN = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0)

_DROP = (re.compile(r'^pts_bbox_head\.code_weights$'), )
_SAME = (
    re.compile(r'^img_backbone\.'),
    re.compile(r'^img_neck\.'),
    re.compile(r'^pts_bbox_head\.(cls_branches|reg_branches)\.\d+\.\d+\.(weight|bias)$'),
    re.compile(r'^pts_bbox_head\.(bev_embedding|query_embedding)\.weight$'),
    re.compile(r'^pts_bbox_head\.positional_encoding\.(row_embed|col_embed)\.weight$'),
    re.compile(r'^pts_bbox_head\.transformer\.(level_embeds|cams_embeds)$'),
    re.compile(r'^pts_bbox_head\.transformer\.reference_points\.(weight|bias)$'),
    re.compile(r'^pts_bbox_head\.transformer\.can_bus_mlp\.(0|2|norm)\.(weight|bias)$'),
)
_LAYER = re.compile(r'^(pts_bbox_head\.transformer\.(?:encoder|decoder)\.layers\.\d+\.)(.+)$')
_ATTN_PARAMS = r'(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)'
_RENAMES = (
    (re.compile(r'^attentions\.0\.' + _ATTN_PARAMS + '$'), r'self_attn.\1.\2'),
    (re.compile(r'^attentions\.1\.deformable_attention\.' + _ATTN_PARAMS + '$'),
     r'cross_attn.deformable_attention.\1.\2'),
    (re.compile(r'^attentions\.1\.' + _ATTN_PARAMS + '$'), r'cross_attn.\1.\2'),
    (re.compile(r'^attentions\.0\.attn\.out_proj\.(weight|bias)$'), r'self_attn.out_proj.\1'),
    (re.compile(r'^ffns\.0\.layers\.(0\.0|1)\.(weight|bias)$'), r'ffn.layers.\1.\2'),
    (re.compile(r'^norms\.(\d+)\.(weight|bias)$'), r'norms.\1.\2'),
)
_IN_PROJ = re.compile(r'^attentions\.0\.attn\.in_proj_(weight|bias)$')


def last_reg_layers(keys) -> Dict[str, int]:
    """``{'pts_bbox_head.reg_branches.<i>.': index of its last Linear}`` from the checkpoint keys."""
    last: Dict[str, int] = {}
    for k in keys:
        m = re.match(r'^(pts_bbox_head\.reg_branches\.\d+\.)(\d+)\.weight$', k)
        if m:
            last[m.group(1)] = max(last.get(m.group(1), -1), int(m.group(2)))
    return last


def to_new_box_code(t: torch.Tensor) -> torch.Tensor:
    """Rows of a regression output layer (weight ``[10, C]`` or bias ``[10]``) from the mmdet3d 0.17 code to
    the 1.x code: ``new[i] = OLD_SIGN[i] * old[OLD_SLOT[i]]``."""
    if t.shape[0] != len(OLD_SLOT):
        raise ValueError(f'regression output has {t.shape[0]} rows, expected {len(OLD_SLOT)} (code_size 10)')
    sign = t.new_tensor(OLD_SIGN).view(-1, *([1] * (t.dim() - 1)))
    return t[list(OLD_SLOT)] * sign


def convert_state_dict(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Official BEVFormer state dict -> (this plugin's state dict, keys that could not be mapped)."""
    out: Dict[str, torch.Tensor] = OrderedDict()
    unmapped: List[str] = []
    last_reg = last_reg_layers(state.keys())
    for key, value in state.items():
        if any(p.match(key) for p in _DROP):
            continue
        if any(p.match(key) for p in _SAME):
            m = re.match(r'^(pts_bbox_head\.reg_branches\.\d+\.)(\d+)\.(weight|bias)$', key)
            if m and int(m.group(2)) == last_reg.get(m.group(1)):
                value = to_new_box_code(value)
            out[key] = value
            continue
        m = _LAYER.match(key)
        if m:
            prefix, rest = m.groups()
            p = _IN_PROJ.match(rest)
            if p:
                q, k, v = value.chunk(3, dim=0)
                for name, part in (('q_proj', q), ('k_proj', k), ('v_proj', v)):
                    out[f'{prefix}self_attn.{name}.{p.group(1)}'] = part.clone()
                continue
            for pattern, repl in _RENAMES:
                if pattern.match(rest):
                    out[prefix + pattern.sub(repl, rest)] = value
                    break
            else:
                unmapped.append(key)
            continue
        unmapped.append(key)
    return out, unmapped


def load_checkpoint_file(path: str, trust_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (``state_dict`` entry or the file itself)."""
    if not os.path.isfile(path):
        raise SystemExit(f'convert_bevformer_ckpt: input checkpoint {path} does not exist')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=not trust_pickle)
    except Exception as err:  # weights_only refuses pickled non-tensor metadata
        raise SystemExit(f'convert_bevformer_ckpt: cannot load {path} with weights_only=True ({type(err).__name__}); '
                         f'if you trust the file, rerun with --trust-pickle') from err
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SystemExit(f'convert_bevformer_ckpt: {path} holds no state dict of tensors')
    return state


def check_against_config(state: Dict[str, torch.Tensor], config: str) -> List[str]:
    """Load ``state`` into the model of ``config``; returns human-readable problems (empty when it fits)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config)
    if cfg.get('custom_imports'):
        import importlib
        for name in cfg.custom_imports['imports']:
            importlib.import_module(name)
    else:
        import projects.bevformer.bevformer  # noqa: F401
    init_default_scope('mmdet3d')
    from mmdet3d.registry import MODELS
    model = MODELS.build(cfg.model)
    own = model.state_dict()
    problems = [f'shape mismatch {k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                for k, v in state.items() if k in own and own[k].shape != v.shape]
    problems += [f'missing in checkpoint: {k}' for k in own if k not in state]
    problems += [f'not in model: {k}' for k in state if k not in own]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official BEVFormer checkpoint (.pth)')
    parser.add_argument('dst', help='output checkpoint for this plugin (.pth)')
    parser.add_argument('--config', help='also check the result against the model built from this config')
    parser.add_argument('--strict', action='store_true', help='fail when any key could not be mapped')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='load with weights_only=False (only for files from a trusted source)')
    args = parser.parse_args(argv)
    state = load_checkpoint_file(args.src, args.trust_pickle)
    new_state, unmapped = convert_state_dict(state)
    print(f'converted {len(new_state)} tensors from {len(state)} keys of {args.src}')
    for key in unmapped:
        print(f'  could not map: {key}')
    problems = check_against_config(new_state, args.config) if args.config else []
    for p in problems:
        print(f'  {p}')
    if args.strict and (unmapped or problems):
        print(f'convert_bevformer_ckpt: {len(unmapped)} unmapped keys, {len(problems)} problems; nothing written '
              f'(--strict)', file=sys.stderr)
        return 1
    from projects.common.checkpoint import atomic_write_bytes
    buf = io.BytesIO()
    torch.save({'state_dict': new_state, 'meta': {'converted_from': os.path.basename(args.src),
                                                  'unmapped_keys': list(unmapped)}}, buf)
    atomic_write_bytes(buf.getvalue(), args.dst)
    print(f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
