"""Model cards: markdown + PNG plots written from the registry metrics and the
held-out predictions that training saved (``python -m models.cards``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from models.registry import load_registry
from models.result import CLASSES

logger = logging.getLogger(__name__)

CARDS_DIR = Path(__file__).resolve().parent / "cards"
IMG = CARDS_DIR / "img"
# Held-out predictions saved by training (out-of-fold classifier probabilities, severity split 0).
PREDICTIONS = CARDS_DIR / "predictions"
TEST_SLICE = Path(__file__).resolve().parents[1] / "tests" / "data" / "models"


def plot_roc(oof: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    z = np.load(oof)
    y, prob, source = z["y"], z["prob"], z["source"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for k, c in enumerate(CLASSES):
        fpr, tpr, _ = roc_curve(y == k, prob[:, k])
        axes[0].plot(fpr, tpr, label=f"{c} (AUC {roc_auc_score(y == k, prob[:, k]):.3f})")
    ci, pi = CLASSES.index("covid19"), CLASSES.index("pneumonia")
    m = (source == "cxr") & np.isin(y, [ci, pi])
    fpr, tpr, _ = roc_curve(y[m] == ci, prob[m, ci])
    axes[1].plot(
        fpr,
        tpr,
        label=f"COVID-19 vs pneumonia, cxr-collection only "
        f"(AUC {roc_auc_score(y[m] == ci, prob[m, ci]):.3f})",
    )
    for ax, t in zip(
        axes, ("one-vs-rest, out-of-fold (5-fold, patient-grouped)", "within one source"), strict=True
    ):
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.set_title(t, fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def plot_severity(split0: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = np.load(split0)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, (k, hi) in zip(axes, (("geographic_extent", 8), ("opacity", 6)), strict=True):
        t, p = z[f"{k}_true"], z[f"{k}_pred"]
        ax.scatter(t, p, s=14, alpha=0.7)
        ax.plot([0, hi], [0, hi], "k:", lw=0.8)
        ax.set_xlim(-0.3, hi + 0.3)
        ax.set_ylim(-0.3, hi + 0.3)
        ax.set_xlabel(f"radiologists' {k} (mean of 3)")
        ax.set_ylabel("predicted")
        ax.set_title(f"{k}: test half of split 0 (r = {np.corrcoef(t, p)[0, 1]:.2f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def plot_examples(out: Path) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.inference import get_analyzer
    from models.preprocessing import load_image

    with (TEST_SLICE / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:3]
    methods = ("gradcam", "saliency", "occlusion")
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3.2 * len(rows)))
    for i, row in enumerate(rows):
        loaded = load_image(TEST_SLICE / row["image"])
        for j, m in enumerate(methods):
            res = get_analyzer().analyze(loaded, heatmap=m)
            if j == 0:
                axes[i, 0].imshow(res.image, cmap="gray")
                axes[i, 0].contour(res.right_lung, levels=[0.5], colors="lime", linewidths=0.8)
                axes[i, 0].contour(res.left_lung, levels=[0.5], colors="orange", linewidths=0.8)
                axes[i, 0].set_title(
                    f"lungs (green: patient right); {res.predicted_class}, "
                    f"extent {res.severity.geographic_extent:.1f}",
                    fontsize=8,
                )
            axes[i, j + 1].imshow(res.image, cmap="gray")
            axes[i, j + 1].imshow(res.heatmap, cmap="jet", alpha=0.4, vmin=0, vmax=1)
            axes[i, j + 1].set_title(f"{m} ({res.extra['heatmap_class']})", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=60)
    plt.close(fig)


def write_cards() -> list[Path]:
    """Write the plots and the three markdown cards; returns the card paths."""
    from models.cards_text import classification_card, segmentation_card, severity_card

    IMG.mkdir(parents=True, exist_ok=True)
    reg = load_registry()["models"]
    if (PREDICTIONS / "cxr-resnet4.oof.npz").is_file():
        plot_roc(PREDICTIONS / "cxr-resnet4.oof.npz", IMG / "classification-roc.png")
    if (PREDICTIONS / "severity.split0.npz").is_file():
        plot_severity(PREDICTIONS / "severity.split0.npz", IMG / "severity-scatter.png")
    plot_examples(IMG / "heatmaps.png")
    paths = []
    for name, fn in (
        ("segmentation", segmentation_card),
        ("classification", classification_card),
        ("severity", severity_card),
    ):
        p = CARDS_DIR / f"{name}.md"
        p.write_text(fn(reg))
        paths.append(p)
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for p in write_cards():
        logger.info("wrote %s", p)
