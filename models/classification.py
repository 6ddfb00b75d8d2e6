"""A small ResNet-like classifier (He et al. 2016) sized for CPU training.

Input: 2 channels at 128 px, the preprocessed image (intensities in
[-1024, 1024]) and the predicted lung mask (0/1), as in Keidar et al.
Output: logits over :data:`models.result.CLASSES`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

INPUT_SIZE = 128


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


class SmallResNet(nn.Module):
    """Stem (stride 4) + four residual stages (strides 1, 2, 2, 1): an 8x8 map at 128 px.

    ``features`` is the last conv map, used by Grad-CAM.
    """

    def __init__(
        self, in_channels: int = 2, n_classes: int = 4, widths: tuple[int, ...] = (24, 48, 96, 160)
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 5, 2, 2, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        stages = []
        cin = widths[0]
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(BasicBlock(cin, w, 2 if i in (1, 2) else 1), BasicBlock(w, w, 1)))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(cin, n_classes)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        img = x[:, :1] / 1024.0
        if x.shape[1] > 1:
            return torch.cat([img, x[:, 1:] * 2.0 - 1.0], 1)
        return img

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(self.scale(x)))

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(feats.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def classifier_input(image256: np.ndarray, lungs256: np.ndarray) -> np.ndarray:
    """(N, 2, 128, 128) float32 from uint8 images (N,256,256) and lung masks (N,2,256,256).

    Training and inference both go through here: the image is 2x2 area-averaged
    and rescaled to [-1024, 1024]; the mask channel is the union of both lungs.
    """
    img = np.asarray(image256, np.float32)
    n, h, w = img.shape
    img = img.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4)) / 127.5 * 1024.0 - 1024.0
    union = np.asarray(lungs256).astype(bool).any(axis=1).astype(np.float32)
    union = union.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    return np.stack([img, union], 1).astype(np.float32)
