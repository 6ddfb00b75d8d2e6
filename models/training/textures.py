"""Generated images that are not chest films, for the chest-likeness's second measure
(:class:`models.orientation.OtherImages`).

LungNet draws lungs on anything, and a smooth random texture can look enough like a film's grey to
pass the probabilistic PCA of :class:`models.orientation.ChestLikeness` (round 3's review: 5 of 16
textures read urgent). These families give the node's features something to tell chest films
from. Each is random in scale, aspect and contrast; :func:`sample` passes the picture through the
node's own preprocessing (:func:`models.preprocessing.model_square`, then the resolution chain),
so it reaches the features exactly as a stored film would. The families are held out one at a
time to measure what the detector catches of a kind it never saw
(:mod:`models.training.orientation`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

Generator = Callable[[np.random.Generator], np.ndarray]


def _size(rng: np.random.Generator) -> tuple[int, int]:
    """Rows and columns: 300-900 rows, width 0.7-1.4 times the height."""
    h = int(rng.integers(300, 900))
    return h, int(h * rng.uniform(0.7, 1.4))


def smooth_noise(rng: np.random.Generator) -> np.ndarray:
    """White noise under a Gaussian blur of 0.5-15 % of the long side."""
    h, w = _size(rng)
    return ndimage.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(0.005, 0.15) * max(h, w))


def fractal(rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f^beta power spectrum, beta 1.5-4 (clouds, marble)."""
    h, w = _size(rng)
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None])
    f[0, 0] = 1.0
    spectrum = f ** (-rng.uniform(1.5, 4.0) / 2) * np.exp(2j * np.pi * rng.random((h, w)))
    return np.real(np.fft.ifft2(spectrum))


def blobs(rng: np.random.Generator) -> np.ndarray:
    """1-11 Gaussian blobs of random size, place and sign."""
    h, w = _size(rng)
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w))
    for _ in range(int(rng.integers(1, 12))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        sy, sx = rng.uniform(0.03, 0.4) * h, rng.uniform(0.03, 0.4) * w
        img += rng.normal() * np.exp(-((y - cy) ** 2 / (2 * sy**2) + (x - cx) ** 2 / (2 * sx**2)))
    return img


def gratings(rng: np.random.Generator) -> np.ndarray:
    """1-4 sine gratings of random direction and 1-30 periods across."""
    h, w = _size(rng)
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w))
    for _ in range(int(rng.integers(1, 5))):
        t, f = rng.uniform(0, np.pi), rng.uniform(1, 30) / max(h, w)
        phase = 2 * np.pi * f * (x * np.cos(t) + y * np.sin(t)) + rng.uniform(0, 2 * np.pi)
        img += rng.uniform(0.3, 1.0) * np.sin(phase)
    return img


def ramps(rng: np.random.Generator) -> np.ndarray:
    """A linear or radial ramp with a little smooth noise."""
    h, w = _size(rng)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    if rng.random() < 0.5:
        t = rng.uniform(0, 2 * np.pi)
        img = x * np.cos(t) + y * np.sin(t)
    else:
        img = np.hypot(y - rng.uniform(0, 1), x - rng.uniform(0, 1))
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(2, 20))
    return img + rng.uniform(0, 0.1) * noise / (noise.std() + 1e-9)


def shapes(rng: np.random.Generator) -> np.ndarray:
    """1-9 ellipses and rectangles of random grey on a random ground, blurred 0-8 px."""
    h, w = _size(rng)
    y, x = np.mgrid[0:h, 0:w]
    img = np.full((h, w), rng.normal())
    for _ in range(int(rng.integers(1, 10))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.05, 0.4) * h, rng.uniform(0.05, 0.4) * w
        if rng.random() < 0.5:
            inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
        else:
            inside = (abs(y - cy) < ry) & (abs(x - cx) < rx)
        img[inside] += rng.normal()
    return ndimage.gaussian_filter(img, rng.uniform(0, 8))


FAMILIES: dict[str, Generator] = {
    f.__name__: f for f in (smooth_noise, fractal, blobs, gratings, ramps, shapes)
}


def to_pixels(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 12-bit picture of ``img`` (its 0.5-99.5 percentiles stretched), a third of them with
    fine noise added as a detector's would be."""
    lo, hi = np.percentile(img, [0.5, 99.5])
    u = np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1)
    if rng.random() < 0.3:
        u = u + rng.uniform(0.005, 0.03) * rng.standard_normal(u.shape)
    return np.clip(u * 4095, 0, 4095).astype(np.float32)


def sample(family: str, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One image of ``family`` as the models see a film: the chained 256-px uint8 square and its
    content box."""
    from models.training.extract import chained

    return chained(to_pixels(FAMILIES[family](rng), rng))
