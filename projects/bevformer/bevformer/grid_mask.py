"""GridMask augmentation on the normalised camera images (BEVFormer trains with it, prob 0.7)."""
import torch
from torch import Tensor, nn


class GridMask(nn.Module):
    """Keep a grid of stripes, zero the square holes between them (BEVFormer's ``GridMask(True, True, rotate=1,
    offset=False, ratio=0.5, mode=1, prob=0.7)``; with rotate=1 the mask is never rotated).

    For an image of height h and width w one period ``d ~ U{2, ..., h-1}`` and stripe width
    ``l = min(max(int(d * ratio + 0.5), 1), d - 1)`` are drawn per call, with random phases; a pixel is kept
    when its row or its column lies on a stripe (mode 1 keeps the stripes). Only active in training mode.
    """

    def __init__(self, use_h: bool = True, use_w: bool = True, ratio: float = 0.5, mode: int = 1,
                 prob: float = 0.7) -> None:
        super().__init__()
        self.use_h, self.use_w, self.ratio, self.mode, self.prob = use_h, use_w, ratio, mode, prob

    def make_mask(self, h: int, w: int, device=None) -> Tensor:
        """``[h, w]`` float mask of one draw (1 = keep)."""
        hh, ww = int(1.5 * h), int(1.5 * w)
        d = int(torch.randint(2, max(h, 3), (1,)))
        length = min(max(int(d * self.ratio + 0.5), 1), d - 1)
        st_h, st_w = int(torch.randint(d, (1,))), int(torch.randint(d, (1,)))
        rows = torch.arange(hh, device=device)
        cols = torch.arange(ww, device=device)
        none_r, none_c = torch.zeros_like(rows, dtype=torch.bool), torch.zeros_like(cols, dtype=torch.bool)
        on_row = self._stripes(rows, st_h, d, length, hh // d) if self.use_h else none_r
        on_col = self._stripes(cols, st_w, d, length, ww // d) if self.use_w else none_c
        stripes = on_row[:, None] | on_col[None, :]  # zeroed by the original before mode 1 inverts
        mask = stripes.float() if self.mode == 1 else (~stripes).float()
        top, left = (hh - h) // 2, (ww - w) // 2
        return mask[top:top + h, left:left + w]

    @staticmethod
    def _stripes(idx: Tensor, start: int, period: int, length: int, count: int) -> Tensor:
        """True on ``[start + k * period, start + k * period + length)`` for ``k < count``."""
        rel = idx - start
        return (rel >= 0) & (rel % period < length) & (rel // period < count)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[M, C, H, W]`` -> masked images (same mask for all, as BEVFormer)."""
        if not self.training or float(torch.rand(1)) > self.prob:
            return x
        mask = self.make_mask(x.shape[-2], x.shape[-1], device=x.device).to(x.dtype)
        return x * mask
