"""Observers: watch tensors, propose the clip ``|r_max|`` of QD-BEV Eq. 1 and hence its scale.

Each observer only accumulates statistics (``forward`` returns its input untouched) and proposes
``clip_value(bits)``; ``compute_scale(bits)`` turns the clip into Eq. 1's ``S = 2 |r_max| / (2^k - 1)``.
Statistics are kept per tensor (``ch_axis=None``: 0-d results) or per channel (``[C]`` results).

Under ``torch.distributed`` (``sync=True`` and an initialised process group of more than one rank) every
batch statistic is all-reduced *before* it is merged (MIN/MAX for ranges, SUM for histograms), so all ranks
hold identical statistics after every call and propose identical scales, equal to one process that saw the
concatenated data. All ranks must therefore call the same observers the same number of times.

Histogram observers (percentile, MSE, entropy) bin ``|x|`` into ``bins`` bins over ``[0, R]``. ``R`` starts at the
first batch's max; when a later batch exceeds it, ``R`` doubles as often as needed and old bins merge in groups
of ``2^m`` (exact re-binning, no interpolation).
"""
import math
from typing import Callable, Dict, Optional, Type, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .fake_quant import SCALE_EPS, check_bits, qrange, scale_from_absmax

__all__ = ['Observer', 'MinMaxObserver', 'EMAMinMaxObserver', 'PercentileObserver', 'MSEObserver',
           'EntropyObserver', 'OBSERVERS', 'register_observer', 'build_observer']

OBSERVERS: Dict[str, Type['Observer']] = {}


def register_observer(name: str) -> Callable[[Type['Observer']], Type['Observer']]:
    """Class decorator adding an observer to :data:`OBSERVERS` under ``name``."""
    def wrap(cls):
        if name in OBSERVERS:
            raise KeyError(f'observer name {name!r} is already registered by {OBSERVERS[name].__name__}')
        OBSERVERS[name] = cls
        cls.registered_name = name
        return cls
    return wrap


def build_observer(cfg: Union[str, dict, 'Observer'], **kwargs) -> 'Observer':
    """Build an observer from a name (``'mse'``) or a dict (``dict(type='percentile', percentile=99.9)``);
    an :class:`Observer` instance is returned as is.

    ``kwargs`` (e.g. ``ch_axis=0``) complete the config; keys of a dict config win.
    """
    if isinstance(cfg, Observer):
        return cfg
    if isinstance(cfg, str):
        cfg = dict(type=cfg)
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'observer config must be a name or a dict with "type", got {cfg!r}')
    cfg = {**kwargs, **cfg}
    name = cfg.pop('type')
    if name not in OBSERVERS:
        raise KeyError(f'unknown observer {name!r}; known observers: {sorted(OBSERVERS)}')
    try:
        return OBSERVERS[name](**cfg)
    except TypeError as err:
        raise TypeError(f'observer {name!r}: bad arguments {sorted(cfg)}: {err}') from None


def _dist_world() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class Observer(nn.Module):
    """Base observer: flattens ``x`` to ``[C, N]`` (``C = 1`` per tensor) and hands it to ``_observe``.

    Args:
        ch_axis: channel axis for per-channel statistics, None for per-tensor.
        sync: all-reduce batch statistics across ranks when a process group is initialised.
    """
    registered_name = 'observer'

    def __init__(self, ch_axis: Optional[int] = None, sync: bool = True):
        super().__init__()
        self.ch_axis = ch_axis
        self.sync = sync
        self.register_buffer('initialized', torch.tensor(False))

    def config(self) -> dict:
        """The dict that rebuilds an empty observer like this one with :func:`build_observer`."""
        return dict(type=self.registered_name, ch_axis=self.ch_axis, sync=self.sync)

    def _flatten(self, x: Tensor) -> Tensor:
        x = x.detach().float()
        if self.ch_axis is None:
            return x.reshape(1, -1)
        if not -x.dim() <= self.ch_axis < x.dim():
            raise ValueError(f'{type(self).__name__}: ch_axis={self.ch_axis} out of range for shape {tuple(x.shape)}')
        return x.movedim(self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1)

    def _all_reduce(self, t: Tensor, op: str) -> Tensor:
        """All-reduce ``t`` across ranks with ``op`` in {'min', 'max', 'sum'} when syncing; identity otherwise."""
        if self.sync and _dist_world() > 1:
            t = t.contiguous()
            dist.all_reduce(t, op=getattr(dist.ReduceOp, op.upper()))
        return t

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Accumulate statistics of ``x`` (any shape) and return ``x``."""
        if x.numel() == 0:
            return x
        self._observe(self._flatten(x))
        self.initialized.fill_(True)
        return x

    def _observe(self, x: Tensor) -> None:
        raise NotImplementedError

    def clip_value(self, bits: int) -> Tensor:
        """Proposed ``|r_max|``: 0-d (per tensor) or ``[C]`` (per channel)."""
        raise NotImplementedError

    def compute_scale(self, bits: int) -> Tensor:
        """QD-BEV Eq. 1 scale from :meth:`clip_value`; raises if nothing was observed."""
        check_bits(bits)
        if not bool(self.initialized):
            raise RuntimeError(f'{type(self).__name__} has observed no data: run calibration (or a forward pass in '
                               f'observe mode) before asking for a scale')
        return scale_from_absmax(self.clip_value(bits), bits)

    def _out(self, v: Tensor) -> Tensor:
        return v.reshape(()) if self.ch_axis is None else v

    def reset(self) -> None:
        """Forget all statistics."""
        self.initialized.fill_(False)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # statistics change shape with the data they saw (channels, histograms): adopt the stored shapes
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if buf is not None and key in state_dict and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class _RangeObserver(Observer):
    """Keeps per-channel ``min_val`` / ``max_val`` buffers ``[C]``; the clip is ``max(-min, max)``."""

    def __init__(self, ch_axis: Optional[int] = None, sync: bool = True):
        super().__init__(ch_axis, sync)
        self.register_buffer('min_val', torch.zeros(1))
        self.register_buffer('max_val', torch.zeros(1))

    def _batch_range(self, x: Tensor):
        lo = self._all_reduce(x.amin(dim=1), 'min')
        hi = self._all_reduce(x.amax(dim=1), 'max')
        return lo, hi

    def clip_value(self, bits: int) -> Tensor:
        return self._out(torch.maximum(-self.min_val, self.max_val).clamp_min(0))

    def reset(self) -> None:
        super().reset()
        self.min_val = torch.zeros(1, device=self.min_val.device)
        self.max_val = torch.zeros(1, device=self.max_val.device)


@register_observer('minmax')
class MinMaxObserver(_RangeObserver):
    """Running min / max; the clip is the largest absolute value ever seen (Eq. 1's ``|r_max|``)."""

    def _observe(self, x: Tensor) -> None:
        lo, hi = self._batch_range(x)
        if bool(self.initialized):
            lo, hi = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)
        self.min_val, self.max_val = lo, hi


@register_observer('ema')
class EMAMinMaxObserver(_RangeObserver):
    """Exponential moving average of the batch min / max: ``v <- v + momentum (v_batch - v)``.

    Args:
        momentum: weight of the new batch (first batch initialises the averages).
    """

    def __init__(self, ch_axis: Optional[int] = None, sync: bool = True, momentum: float = 0.1):
        super().__init__(ch_axis, sync)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f'EMAMinMaxObserver: momentum must be in (0, 1], got {momentum}')
        self.momentum = momentum

    def config(self) -> dict:
        return {**super().config(), 'momentum': self.momentum}

    def _observe(self, x: Tensor) -> None:
        lo, hi = self._batch_range(x)
        if bool(self.initialized):
            lo = self.min_val + self.momentum * (lo - self.min_val)
            hi = self.max_val + self.momentum * (hi - self.max_val)
        self.min_val, self.max_val = lo, hi


class _HistogramObserver(Observer):
    """Histograms of ``|x|`` split by sign: ``hist`` ``[C, 2 * bins]`` (negatives first, then ``x >= 0``), each half
    over ``[0, hist_max]`` per channel, plus the exact ``absmax`` ``[C]``. ``abs_hist()`` folds the halves."""

    def __init__(self, ch_axis: Optional[int] = None, sync: bool = True, bins: int = 2048):
        super().__init__(ch_axis, sync)
        if bins < 8:
            raise ValueError(f'{type(self).__name__}: bins must be >= 8, got {bins}')
        self.bins = bins
        self.register_buffer('hist', torch.zeros(1, 2 * bins))
        self.register_buffer('hist_max', torch.zeros(1))
        self.register_buffer('absmax', torch.zeros(1))

    def config(self) -> dict:
        return {**super().config(), 'bins': self.bins}

    def reset(self) -> None:
        super().reset()
        dev = self.hist.device
        self.hist = torch.zeros(1, 2 * self.bins, device=dev)
        self.hist_max = torch.zeros(1, device=dev)
        self.absmax = torch.zeros(1, device=dev)

    def abs_hist(self) -> Tensor:
        """Histogram of ``|x|``, ``[C, bins]``."""
        return self.hist[:, :self.bins] + self.hist[:, self.bins:]

    def _observe(self, x: Tensor) -> None:
        a = x.abs()
        c = a.shape[0]
        batch_max = self._all_reduce(a.amax(dim=1), 'max')
        if not bool(self.initialized):
            self.hist = torch.zeros(c, 2 * self.bins, device=a.device)
            self.hist_max = batch_max.clamp_min(SCALE_EPS)
            self.absmax = batch_max
        else:
            if self.hist.shape[0] != c:
                raise ValueError(f'{type(self).__name__}: saw {self.hist.shape[0]} channels before, now {c}')
            self._grow(batch_max)
            self.absmax = torch.maximum(self.absmax, batch_max)
        idx = (a / self.hist_max[:, None] * self.bins).floor().clamp(0, self.bins - 1).long()
        idx = idx + (x >= 0).long() * self.bins + torch.arange(c, device=a.device)[:, None] * (2 * self.bins)
        batch_hist = torch.zeros(c * 2 * self.bins, device=a.device)
        batch_hist.scatter_add_(0, idx.reshape(-1), torch.ones(idx.numel(), device=a.device))
        batch_hist = self._all_reduce(batch_hist, 'sum')
        self.hist = self.hist + batch_hist.reshape(c, 2 * self.bins)

    def _grow(self, batch_max: Tensor) -> None:
        """Double ``hist_max`` per channel ``m`` times until it covers ``batch_max``; merge bins by ``2^m``."""
        ratio = (batch_max / self.hist_max).clamp_min(1.0)
        m = torch.ceil(torch.log2(ratio)).long().clamp_min(0)
        m = torch.where(self.hist_max * torch.pow(2.0, m.float()) < batch_max, m + 1, m)
        if int(m.max()) == 0:
            return
        c, nb = self.hist.shape[0], self.bins
        shift = torch.pow(2, m.clamp_max(62))  # [C]
        j = torch.arange(2 * nb, device=m.device)[None, :]
        half = torch.div(j, nb, rounding_mode='floor')
        new_idx = half * nb + torch.div(j - half * nb, shift[:, None], rounding_mode='floor')
        new_idx = new_idx + torch.arange(c, device=m.device)[:, None] * (2 * nb)
        merged = torch.zeros(c * 2 * nb, device=self.hist.device)
        merged.scatter_add_(0, new_idx.reshape(-1), self.hist.reshape(-1))
        self.hist = merged.reshape(c, 2 * nb)
        self.hist_max = self.hist_max * torch.pow(2.0, m.float())

    def _centers(self) -> Tensor:
        """Bin centres of ``|x|``, ``[C, bins]``."""
        width = self.hist_max / self.bins
        return (torch.arange(self.bins, device=width.device, dtype=torch.float32)[None, :] + 0.5) * width[:, None]


@register_observer('percentile')
class PercentileObserver(_HistogramObserver):
    """Clip at the ``percentile`` of ``|x|`` (linear interpolation inside the histogram bin), at most ``absmax``."""

    def __init__(self, ch_axis: Optional[int] = None, sync: bool = True, bins: int = 2048,
                 percentile: float = 99.99):
        super().__init__(ch_axis, sync, bins)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f'PercentileObserver: percentile must be in (0, 100], got {percentile}')
        self.percentile = percentile

    def config(self) -> dict:
        return {**super().config(), 'percentile': self.percentile}

    def clip_value(self, bits: int) -> Tensor:
        hist = self.abs_hist().double()
        cdf = hist.cumsum(dim=1)
        target = cdf[:, -1:] * (self.percentile / 100.0)
        b = torch.searchsorted(cdf, target).clamp_max(self.bins - 1)  # first bin with cdf >= target, [C, 1]
        prev = torch.where(b > 0, cdf.gather(1, (b - 1).clamp_min(0)), torch.zeros_like(target))
        count = hist.gather(1, b).clamp_min(1e-12)
        frac = ((target - prev) / count).clamp(0, 1)
        width = (self.hist_max.double() / self.bins)[:, None]
        clip = ((b.double() + frac) * width).squeeze(1).float()
        return self._out(torch.minimum(clip, self.absmax))


@register_observer('mse')
class MSEObserver(_HistogramObserver):
    """OMSE: the clip among ``num_candidates`` values ``absmax * j / n`` that minimises the quantization MSE.

    The error of a candidate is ``sum_b n+_b (v_b - Q(v_b))^2 + n-_b (v_b + Q(-v_b))^2`` over bin centres ``v_b``
    of the sign-split histograms with the exact Eq. 1 quantizer of that candidate (the clamp is asymmetric:
    ``-2^(k-1)`` vs ``2^(k-1) - 1``); an estimate that is accurate while a bin is narrower than a step.
    """

    def __init__(self, ch_axis: Optional[int] = None, sync: bool = True, bins: int = 2048,
                 num_candidates: int = 100):
        super().__init__(ch_axis, sync, bins)
        if num_candidates < 1:
            raise ValueError(f'MSEObserver: num_candidates must be >= 1, got {num_candidates}')
        self.num_candidates = num_candidates

    def config(self) -> dict:
        return {**super().config(), 'num_candidates': self.num_candidates}

    @torch.no_grad()
    def clip_value(self, bits: int) -> Tensor:
        if bits == 32:
            return self._out(self.absmax.clone())
        qmin, qmax = qrange(bits)
        centers = self._centers()[None]  # [1, C, bins]
        neg, pos = self.hist[None, :, :self.bins], self.hist[None, :, self.bins:]
        fracs = torch.arange(1, self.num_candidates + 1, device=centers.device) / self.num_candidates
        c, nb = self.hist.shape[0], self.bins
        chunk = max(1, (1 << 22) // (c * nb))  # candidates per step: <= 4M elements
        errs = []
        for f in fracs.split(chunk):
            clip = f[:, None] * self.absmax[None, :]  # [n, C]
            scale = scale_from_absmax(clip, bits)[:, :, None]
            inv = torch.reciprocal(scale)
            err_pos = (centers - torch.round(centers * inv).clamp(qmin, qmax) * scale) ** 2
            err_neg = (centers + torch.round(-centers * inv).clamp(qmin, qmax) * scale) ** 2
            errs.append((err_pos * pos + err_neg * neg).sum(dim=2))  # [n, C]
        best = torch.cat(errs).argmin(dim=0)  # first minimum per channel
        return self._out(fracs[best] * self.absmax)


@register_observer('entropy')
class EntropyObserver(_HistogramObserver):
    """TensorRT's entropy calibration: the clip minimising KL(P || Q) between the ``|x|`` histogram clipped at
    bin ``i`` (outliers added to the last bin) and its quantization to ``2^(k-1)`` levels, for ``i`` from
    ``2^(k-1)`` to the bin of ``absmax`` (every ``stride``-th); the clip is the right edge of bin ``i - 1``.
    """

    def __init__(self, ch_axis: Optional[int] = None, sync: bool = True, bins: int = 2048, stride: int = 1):
        super().__init__(ch_axis, sync, bins)
        if stride < 1:
            raise ValueError(f'EntropyObserver: stride must be >= 1, got {stride}')
        self.stride = stride

    def config(self) -> dict:
        return {**super().config(), 'stride': self.stride}

    def clip_value(self, bits: int) -> Tensor:
        if bits == 32:
            return self._out(self.absmax.clone())
        width = self.hist_max / self.bins
        hist = self.abs_hist().double()
        clips = [self._clip_one(hist[c], bits, float(width[c]), float(self.absmax[c])) for c in range(hist.shape[0])]
        return self._out(torch.tensor(clips, device=self.hist.device, dtype=torch.float32))

    def _clip_one(self, hist: Tensor, bits: int, width: float, absmax: float) -> float:
        """Clip of one channel from its histogram ``[bins]`` (float64)."""
        levels = 1 << (bits - 1)
        used = int(min(self.bins, math.floor(absmax / width) + 1)) if width > 0 else 1
        if used <= levels:
            return absmax
        cands = torch.arange(levels, used + 1, self.stride, device=hist.device)  # [I]
        kl = self.kl_divergences(hist, cands, levels)
        best = int(torch.nonzero(kl == kl.min())[-1])  # last argmin, as TensorRT's reference does
        return min(float(cands[best]) * width, absmax)

    @staticmethod
    def kl_divergences(hist: Tensor, cands: Tensor, levels: int) -> Tensor:
        """KL(P_i || Q_i) for every candidate bin count ``i`` in ``cands`` ``[I]`` (float64 ``hist`` ``[bins]``).

        ``P_i`` = ``hist[:i]`` with ``sum(hist[i:])`` added to bin ``i - 1``; ``Q_i`` spreads the mass of each of
        the ``levels`` groups (bins ``j`` with ``floor(j * levels / i) = l``) evenly over its non-empty bins.
        Both are normalised. The groups are contiguous, so every sum comes from prefix sums: ``[I, levels]`` work.
        """
        zero = hist.new_zeros(1)
        cum_h = torch.cat([zero, hist.cumsum(0)])  # cum_h[j] = sum(hist[:j])
        cum_nz = torch.cat([zero, (hist > 0).to(hist.dtype).cumsum(0)])
        hlogh = torch.where(hist > 0, hist * torch.log(hist.clamp_min(1e-300)), torch.zeros_like(hist))
        cum_hlogh = torch.cat([zero, hlogh.cumsum(0)])
        total = cum_h[-1]
        i = cands[:, None]  # [I, 1]
        lvl = torch.arange(levels + 1, device=hist.device)[None, :]
        edges = torch.div(lvl * i + levels - 1, levels, rounding_mode='floor')  # ceil(l * i / levels), [I, L+1]
        s_l = cum_h[edges[:, 1:]] - cum_h[edges[:, :-1]]  # group mass [I, L]
        n_l = cum_nz[edges[:, 1:]] - cum_nz[edges[:, :-1]]  # non-empty bins per group
        tail = total - cum_h[cands]  # [I]
        last = hist[cands - 1]
        p_l = s_l.clone()
        p_l[:, -1] += tail  # bin i - 1 always lies in the last group
        zq = cum_h[cands]
        log_q = (torch.log(s_l.clamp_min(1e-300)) - torch.log(n_l.clamp_min(1))
                 - torch.log(zq.clamp_min(1e-300))[:, None])
        cross = torch.where(p_l > 0, p_l * log_q, torch.zeros_like(p_l)).sum(dim=1)
        new_last = last + tail
        corr = (torch.where(new_last > 0, new_last * torch.log(new_last.clamp_min(1e-300)), torch.zeros_like(tail))
                - torch.where(last > 0, last * torch.log(last.clamp_min(1e-300)), torch.zeros_like(tail)))
        kl = (cum_hlogh[cands] + corr - cross) / total - torch.log(total)
        return torch.where((last <= 0) & (tail > 0), torch.full_like(kl, float('inf')), kl)
