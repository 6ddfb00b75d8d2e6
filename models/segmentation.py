"""A small U-Net (Ronneberger et al. 2015) in plain PyTorch.

Used twice: the lung segmenter (2 outputs: patient right, patient left lung)
and the opacity segmenter (1 output: ground-glass or consolidation).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` poolings; channels double at each level from ``base``.

    Input: (N, in_channels, H, W) with intensities in [-1024, 1024]; H and W
    divisible by ``input_stride * 2**depth``. Output: logits (N, out_channels, H, W).
    ``input_stride`` 2 runs the network at half resolution (2x2 average pooling in,
    bilinear upsampling of the logits out): four times cheaper on CPU.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        base: int = 16,
        depth: int = 4,
        input_stride: int = 1,
    ) -> None:
        super().__init__()
        self.input_stride = input_stride
        chans = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans:
            self.down.append(_block(cin, c))
            cin = c
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for c in reversed(chans[:-1]):
            self.up.append(nn.ConvTranspose2d(cin, c, 2, stride=2))
            self.dec.append(_block(2 * c, c))
            cin = c
        self.head = nn.Conv2d(cin, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = x / 1024.0
        if self.input_stride > 1:
            x = F.avg_pool2d(x, self.input_stride)
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, dec in zip(self.up, self.dec, strict=True):
            x = up(x)
            x = dec(torch.cat([x, skips.pop()], dim=1))
        x = self.head(x)
        if self.input_stride > 1:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss averaged over channels and images."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(2, 3))
    denom = p.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def clean_lung_masks(prob: torch.Tensor | object, threshold: float = 0.5):  # type: ignore[no-untyped-def]
    """Threshold (2, H, W) lung probabilities; keep the largest component per lung, fill holes."""
    import numpy as np
    from scipy import ndimage

    prob = np.asarray(prob)
    out = np.zeros(prob.shape, dtype=bool)
    for k in range(prob.shape[0]):
        m = prob[k] > threshold
        labels, n = ndimage.label(m)
        if n > 1:
            sizes = ndimage.sum(m, labels, range(1, n + 1))
            m = labels == (int(np.argmax(sizes)) + 1)
        out[k] = ndimage.binary_fill_holes(m)
    return out
