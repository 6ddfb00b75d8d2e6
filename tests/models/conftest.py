"""Fixtures for the model tests: the shipped analyzer and small committed inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "models"


@pytest.fixture(scope="session")
def analyzer():
    import torch

    torch.set_num_threads(2)
    from models.inference import Analyzer

    a = Analyzer(device="cpu")
    a.load_all()
    return a


@pytest.fixture(scope="session")
def heldout_slice() -> list[dict[str, str]]:
    with (DATA_DIR / "index.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def cr_chest_dicom() -> Path:
    """A CR chest image, MONOCHROME1, JPEG 2000, from the pydicom-data package."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_J2KI.dcm")
    if path is None:
        pytest.skip("pydicom-data test file RG1_J2KI.dcm not available")
    return Path(path)


@pytest.fixture()
def png_path(tmp_path: Path) -> Path:
    """A 16-bit PNG made from a committed held-out JPEG (exercises the I;16 path)."""
    img = np.asarray(Image.open(DATA_DIR / "01E392EE-69F9-4E33-BFCE-E5C968654078.jpg").convert("L"))
    path = tmp_path / "chest.png"
    Image.fromarray(img.astype(np.uint16) * 257).save(path)
    return path


@pytest.fixture()
def jpeg_path() -> Path:
    return DATA_DIR / "1312A392-67A3-4EBF-9319-810CF6DA5EF6.jpg"
