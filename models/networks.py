"""The shared chest X-ray encoder and the two networks built on it.

- :class:`Encoder`: a small ResNet (He et al. 2016), one grey channel in, five
  feature maps out (strides 2, 4, 8, 16, 32). Pretrained once, without labels,
  by contrastive learning (SimCLR, Chen et al. 2020) on every frontal image
  whose patient has no severity score (``models/fit.py``).
- :class:`LungNet`: the encoder plus a U-Net-style decoder (Ronneberger et al.)
  on the full 256-px image, with five output maps (the patient's right and
  left lung as V7 and radiologists draw them; the same in the NLM style, which
  leaves out the lung behind the heart; opacity) and a four-class head. Its
  lung maps are the node's lung masks; its opacity map, its class logits and
  its features pooled over each lung are the severity features.
- :class:`CropClassifier`: the encoder plus a linear head on the lung crop
  (COVID-CXNet, Keidar et al.): the image cut to the predicted lungs' box,
  with everything outside the (dilated) lungs faded to grey, so that borders,
  text and the mediastinum carry no evidence; Grad-CAM reads its stride-16 map.

Inputs are intensities in [-1024, 1024] (Cohen et al.), as everywhere in models/.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

WIDTHS = (32, 64, 128, 256)
SEG_SIZE = 256
CROP_SIZE = 192
# LungNet output channels.
V7_RIGHT, V7_LEFT, NLM_RIGHT, NLM_LEFT, OPACITY = range(5)


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


class CropClassifier(nn.Module):
    """Encoder + dropout + linear head on the lung crop; ``features``/``head`` split for Grad-CAM
    at stride 16 (the last stage runs inside ``head``)."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, n_classes: int = 4) -> None:
        super().__init__()
        self.encoder = Encoder(widths)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(widths[-1], n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        y = F.max_pool2d(enc.stem(x / 1024.0), 2)
        for stage in enc.stages[:3]:
            y = stage(y)
        return y

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        return self.encoder.stages[3](feats).mean(dim=(2, 3))

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.embed(feats)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --- lung crop -----------------------------------------------------------------------------

CROP_MARGIN = 0.06  # of the square's side, around the lungs' box
FADE_DILATE = 10  # px at 256: the lung mask is dilated by this before fading the rest
FADE_SIGMA = 4.0


def crop_box(lungs: np.ndarray, size: int = SEG_SIZE) -> tuple[int, int, int, int]:
    """Square box (r0, r1, c0, c1) around both lungs (N.B. may extend past the image: padded)."""
    union = np.asarray(np.asarray(lungs).astype(bool).any(axis=0))
    if union.sum() < 50:  # no lungs found: the whole image
        return 0, size, 0, size
    rows = np.nonzero(union.any(axis=1))[0]
    cols = np.nonzero(union.any(axis=0))[0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(r1 - r0, c1 - c0) + 2 * round(CROP_MARGIN * size)
    rc, cc = (r0 + r1) / 2.0, (c0 + c1) / 2.0
    r0, c0 = round(rc - side / 2), round(cc - side / 2)
    return r0, r0 + side, c0, c0 + side


def lung_weight(lungs: np.ndarray) -> np.ndarray:
    """Soft weight in [0, 1]: 1 inside the dilated lungs, fading to 0 outside."""
    union = np.asarray(lungs).astype(bool).any(axis=0)
    if union.sum() < 50:
        return np.ones(union.shape, np.float32)
    grown = ndimage.binary_dilation(union, iterations=FADE_DILATE)
    return np.clip(ndimage.gaussian_filter(grown.astype(np.float32), FADE_SIGMA) * 1.5, 0, 1)


def _take(arr: np.ndarray, box: tuple[int, int, int, int], fill: float) -> np.ndarray:
    r0, r1, c0, c1 = box
    h, w = arr.shape
    out = np.full((r1 - r0, c1 - c0), fill, np.float32)
    rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    if rr1 > rr0 and cc1 > cc0:
        out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = arr[rr0:rr1, cc0:cc1]
    return out


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(arr, np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def lung_crop(image8: np.ndarray, lungs: np.ndarray, size: int = CROP_SIZE) -> tuple[np.ndarray, tuple]:
    """The classifier's input from a 256-px uint8 image and its (2, 256, 256) lung masks.

    Returns ``(x, box)``: x is (size, size) float32 in [-1024, 1024] with the
    non-lung part faded to 0 (mid grey), box the crop in 256-px coordinates.
    """
    box = crop_box(lungs, image8.shape[0])
    img = np.asarray(image8, np.float32) / 127.5 - 1.0  # [-1, 1]
    faded = img * lung_weight(lungs)
    return _resize(_take(faded, box, 0.0), size) * 1024.0, box


def uncrop(heat: np.ndarray, box: tuple[int, int, int, int], size: int = SEG_SIZE) -> np.ndarray:
    """Map a crop-space map back onto the 256-px square (zero outside the box)."""
    r0, r1, c0, c1 = box
    side = r1 - r0
    big = _resize(heat, side)
    out = np.zeros((size, size), np.float32)
    rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, size), max(c0, 0), min(c1, size)
    out[rr0:rr1, cc0:cc1] = big[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0]
    return out


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
