"""The chest X-ray encoder and the network built on it.

- :class:`Encoder`: a small ResNet (He et al. 2016), one grey channel in, five
  feature maps out (strides 2, 4, 8, 16, 32). Pretrained once, without labels,
  by contrastive learning (SimCLR, Chen et al. 2020) on every frontal image
  whose patient has no severity score (``models/training/fit.py``).
- :class:`LungNet`: the encoder plus a U-Net-style decoder (Ronneberger et al.)
  on the full 256-px image, with five output maps (the patient's right and
  left lung as V7 and radiologists draw them; the same in the NLM style, which
  leaves out the lung behind the heart; opacity) and a four-class head. Its
  lung maps are the node's lung masks; its opacity map, its class logits and
  its features pooled over each lung are the severity features.

Round 2's crop classifier (the encoder on the lung crop) is gone: it learned the
image's source; the classifier now reads LungNet's opacity (``models/evidence.py``).

Inputs are intensities in [-1024, 1024] (Cohen et al.), as everywhere in models/.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

WIDTHS = (32, 64, 128, 256)
SEG_SIZE = 256
# LungNet output channels.
V7_RIGHT, V7_LEFT, NLM_RIGHT, NLM_LEFT, OPACITY = range(5)
LUNG_PAIRS = ((V7_RIGHT, V7_LEFT), (NLM_RIGHT, NLM_LEFT))  # (right, left) channels of each lung style


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.short(x))


class Encoder(nn.Module):
    """Stem (stride 2) + max-pool + four residual stages (strides 1, 2, 2, 2).

    ``forward`` returns ``[stem, s1, s2, s3, s4]`` at strides 2, 4, 8, 16, 32.
    """

    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages = []
        cin = widths[0]
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s0 = self.stem(x / 1024.0)
        feats = [s0]
        y = F.max_pool2d(s0, 2)
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        return feats


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class LungNet(nn.Module):
    """Encoder + decoder: 5 maps (:data:`V7_RIGHT` .. :data:`OPACITY`) and 4 class logits."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, n_maps: int = 5, n_classes: int = 4) -> None:
        super().__init__()
        self.encoder = Encoder(widths)
        w = list(widths)
        dec = [w[2], w[1], w[0], w[0] // 2]  # decoder widths at strides 16, 8, 4, 2
        skips = [w[2], w[1], w[0], w[0]]
        self.lateral = nn.Conv2d(w[3], dec[0], 1)
        self.dec = nn.ModuleList()
        cin = dec[0]
        for d, s in zip(dec, skips, strict=True):
            self.dec.append(nn.Sequential(_conv(cin + s, d), _conv(d, d)))
            cin = d
        self.maps = nn.Conv2d(cin, n_maps, 1)
        self.cls = nn.Linear(w[3], n_classes)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(map logits at input size, class logits, encoder features)."""
        feats = self.encoder(x)
        y = self.lateral(feats[4])
        for block, skip in zip(self.dec, (feats[3], feats[2], feats[1], feats[0]), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], 1))
        maps = F.interpolate(self.maps(y), size=x.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.cls(feats[4].mean(dim=(2, 3)))
        return maps, logits, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[0]


def lung_features(feats: list[torch.Tensor], lungs: torch.Tensor) -> torch.Tensor:
    """Encoder features (strides 16 and 32) averaged over each lung: (N, 2, C3 + C4).

    ``lungs`` is (N, 2, H, W) float at the input size (patient right, left).
    """
    out = []
    for f in (feats[3], feats[4]):
        # the fraction of each feature cell inside the lung
        m = F.adaptive_avg_pool2d(lungs, (int(f.shape[-2]), int(f.shape[-1])))
        num = torch.einsum("nchw,nkhw->nkc", f, m)
        out.append(num / m.sum(dim=(2, 3))[..., None].clamp_min(1e-3))
    return torch.cat(out, -1)
