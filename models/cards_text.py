# ruff: noqa: E501  (markdown templates: long lines are prose)
"""Markdown of the three model cards, filled from the registry entries."""

from __future__ import annotations

from typing import Any

from models.result import CLASSES


def _ms(d: dict[str, Any]) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def _ci(d: dict[str, Any]) -> str:
    return f"{d['value']:.3f} (95% CI {d['ci95'][0]:.3f}–{d['ci95'][1]:.3f})"


def _training(e: dict[str, Any]) -> str:
    t = e["training"]
    lines = [
        f"- Weights: `models/weights/{e['file']}`, SHA-256 `{e['sha256']}`",
        f"- Training command: `{t['command']}`",
        f"- Data: {t['data']}",
        f"- Images used for training: {t['images']}; seed {t['seed']}",
    ]
    if "selection_note" in t:
        lines.append(f"- {t['selection_note']}")
    if "epochs" in t:
        lines.append(
            f"- Epochs: {t['epochs']}; wall time of the shipped model's training: {t.get('seconds', 'n/a')} s "
            "(CPU, 1 torch thread on a shared 2-core machine)"
        )
    return "\n".join(lines)


def segmentation_card(reg: dict[str, Any]) -> str:
    e = reg["segmentation"]
    m = e["metrics"]
    return f"""# Lung segmentation: {e["name"]}@{e["version"]}

A small U-Net (plain PyTorch, {e["arch"]["base"]} base channels, depth {e["arch"]["depth"]}, run at half of the
{e["input_size"]}-px square, logits upsampled) that outputs two masks, the patient's right lung (image left) and
left lung, mapped back to the input image's resolution.

## Data and protocol

{_training(e)}
- V7 Labs masks hold both lungs in one mask: split into right/left by connected components (a component
  straddling the mask's horizontal centre is cut there). The radiologists' right-lung/left-lung masks are used
  as they are where an image has both.
- Held out (never trained on): every patient with a Cohen severity score (so the severity evaluation stays
  clean) and a fixed random 10% of the other patients (GroupShuffleSplit, seed 0).
- Augmentations: rotation ±10°, shift ±8%, zoom ±10%, brightness ±10%, contrast ±20%; no flips (they would swap
  the lungs).

## Held-out metrics ({m["n_images"]} images, {m["n_patients"]} patients)

| metric | mean ± std | target |
|---|---|---|
| Dice, both lungs, at input resolution | {_ms(m["dice"])} (median {m["dice_median"]:.3f}) | ≥ 0.95 |
| Dice, right lung | {_ms(m["dice_right"])} | |
| Dice, left lung | {_ms(m["dice_left"])} | |
| Hausdorff distance, pixels of the {e["input_size"]}-px square | {_ms(m["hausdorff_px"])} | |

No Hausdorff distance in mm: the development JPEGs carry no pixel spacing. Reference masks are V7 or
radiologists' outlines from figures of papers, some of which are re-cropped or annotated.

Worst held-out images (Dice): {", ".join(f"`{f.split('/')[-1]}` {d:.2f}" for f, d in m["worst"])}.

![examples](img/heatmaps.png)

## Limitations

- Trained on {e["training"]["images"]} images, mostly COVID-19 figures from papers; no NIH image has a lung mask,
  so the NIH part of the data is never evaluated.
- The right/left split of V7 masks is heuristic; merged lungs are cut at the mask's centre.
- Low-resolution internal map (128 px): thin structures (costophrenic angles) are smoothed.
"""


def classification_card(reg: dict[str, Any]) -> str:
    e = reg["classification"]
    m = e.get("metrics")
    if not m:
        return f"# Classification: {e['name']}@{e['version']}\n\nNo cross-validated metrics recorded.\n"
    auc_rows = "\n".join(f"| {c} | {m['class_counts'][c]} | {_ci(m['auc'][c])} |" for c in CLASSES)
    src = m["per_source_auc"]
    src_rows = "\n".join(
        f"| {s} | {v['n']} | " + " | ".join("—" if v[c] is None else f"{v[c]:.3f}" for c in CLASSES) + " |"
        for s, v in src.items()
    )
    conf = "\n".join(
        f"| {CLASSES[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(m["confusion"])
    )
    s98 = m["covid19_at_98_sensitivity"]
    return f"""# Classification: {e["name"]}@{e["version"]}

Four classes as in Basu et al. (normal, other disease, non-COVID pneumonia, COVID-19) from a small ResNet-like
CNN trained from scratch on CPU. Input: 2 channels at 128 px — the preprocessed image and the lung mask predicted
by the lung segmenter (Keidar et al.).

## Data and protocol

{_training(e)}
- Labels: cxr-collection `COVID-19` (incl. `COVID-19, ARDS`) → covid19; bacterial/viral/fungal non-COVID
  pneumonias and lipoid pneumonia → pneumonia; cxr `ARDS` → other_disease; `No Finding` (both sources) → normal;
  nih-sample with `Pneumonia` among its labels → pneumonia (a second source for that class); other nih findings →
  other_disease; `todo`/`Unknown` excluded.
- Class balancing by sampling (inverse class frequency); augmentations as Keidar et al. (rotation ±10°,
  shift ±8%, zoom ±10%, brightness/contrast), no flips; label smoothing 0.05; AdamW, one-cycle LR.
- Metrics: patient-grouped, label-stratified 5-fold CV (StratifiedGroupKFold, seed 0); each fold's model
  trained from scratch on the other four folds; metrics on the pooled out-of-fold predictions; 95% CIs by
  bootstrap over images (1000 resamples). CV time: {m["cv_seconds"]:.0f} s.
- COVID-19 operating point (Minaee et al.): for each fold the threshold giving 98% sensitivity on the *other*
  folds' out-of-fold predictions, applied to the fold. Shipped threshold: {e["thresholds"]["covid19"]} (98%
  sensitivity on all out-of-fold predictions).

## Results ({m["n_images"]} images)

| class | images | AUC one-vs-rest |
|---|---|---|
{auc_rows}

Accuracy (argmax): {_ci(m["accuracy"])}. Anchor from the literature: AUC 0.96 (Keidar et al., a much larger
data set and ImageNet-pretrained networks).

COVID-19 at 98% sensitivity (threshold from the other folds): sensitivity {s98["sensitivity"]:.3f},
specificity {s98["specificity"]:.3f}.

**COVID-19 vs other pneumonia within cxr-collection only** (one source, so no source shortcut):
AUC {_ci(m["within_collection_covid19_vs_pneumonia_auc"])}.

Per source (AUC one-vs-rest inside each source):

| source | images | {" | ".join(CLASSES)} |
|---|---|{"---|" * len(CLASSES)}
{src_rows}

Confusion matrix (rows true, columns predicted):

| true \\ predicted | {" | ".join(CLASSES)} |
|---|{"---|" * len(CLASSES)}
{conf}

![ROC curves](img/classification-roc.png)

![heatmaps](img/heatmaps.png)

## Limitations — read before trusting a number here

- **Source confound.** Every COVID-19 image comes from cxr-collection (figures from papers and web sites) and
  almost every normal / other-disease image from one NIH hospital. The COVID-19 and normal AUCs largely measure
  how well the network tells the two sources apart (resolution, borders, JPEG artefacts, text). The
  within-collection COVID-19 vs pneumonia AUC is the more honest number for the disease itself.
- NIH labels are NLP-mined; `No Finding` is not a radiologist-confirmed normal.
- The lung-mask channel comes from the shipped lung segmenter, which was trained on masks of some
  cxr-collection images that fall in CV validation folds (masks only, never class labels).
- Small data (≈1,100 images), 128-px input, CPU training of {e["training"]["epochs"]} epochs: not a clinical device.
"""


def severity_card(reg: dict[str, Any]) -> str:
    e = reg["severity"]
    o = reg["opacity"]
    b = reg["severity_backbone"]
    m = e["metrics"]
    rows = []
    for k, hi, target in (("geographic_extent", 8, "MAE 1.14, r 0.80"), ("opacity", 6, "MAE 0.78, r 0.78")):
        v = m[k]
        rows.append(
            f"| {k} (0-{hi}) | {_ms(v['pearson'])} | {_ms(v['r2'])} | {_ms(v['mae'])} | {_ms(v['mse'])} | "
            f"{_ms(m['baseline'][k]['mae'])} | {_ms(m['baseline'][k]['mse'])} | {target} |"
        )
    rows_s = "\n".join(rows)
    return f"""# Severity: {e["name"]}@{e["version"]} (+ {o["name"]}@{o["version"]})

Cohen et al. 2020 scores: geographic extent (0-8) and opacity (0-6), sums over both lungs. Route: an opacity
U-Net (ground-glass ∪ consolidation) gives per-lung involvement fractions (whole lung and upper/middle/lower
thirds); with intensity statistics inside each predicted lung and the four logits of a "backbone" classifier
(the classifier's architecture, trained without any scored patient — Cohen et al. likewise regress on features
of a network trained for pathology classification on other images) they feed two ridge regressions
(24 standardised features, alpha by leave-one-out CV) fitted on the 94 scored images.

## Data and protocol

- Opacity U-Net: {o["training"]["data"]}; {o["training"]["images"]} images, {o["training"]["epochs"]} epochs,
  SHA-256 `{o["sha256"]}`; command `{o["training"]["command"]}`.
  Held-out Dice (256-px square, on the radiologist-segmented images of scored patients): {_ms(o["metrics"]["dice_heldout"])}.
- Backbone classifier: {b["training"]["data"]}; {b["training"]["images"]} images, {b["training"]["epochs"]} epochs,
  seed {b["training"]["seed"]}, SHA-256 `{b["sha256"]}`.
- Ridge: `models/weights/{e["file"]}` (JSON coefficients), SHA-256 `{e["sha256"]}`.
- Feature sets compared on these same 50 splits before shipping (a mild selection, disclosed here): lung
  features only (extent r 0.460, MAE 1.811; opacity r 0.533, MAE 1.108); + backbone probabilities (extent r
  0.542, MAE 1.698; opacity r 0.576, MAE 1.062); + backbone logits (shipped, below); backbone probabilities
  alone (extent r 0.318, MAE 2.016; opacity r 0.270, MAE 1.278).
- Protocol (Cohen et al.): {m["protocol"]}; {m["n_images"]} images of {m["n_patients"]} patients. In every split
  the ridge is refitted on the training half only. Leakage control: {m["leakage_control"]}.
- Baseline ("no data"): predict the training half's mean.

## Results (mean ± std over 50 splits)

| score | Pearson r | R² | MAE | MSE | baseline MAE | baseline MSE | Cohen et al. |
|---|---|---|---|---|---|---|---|
{rows_s}

![predicted vs true](img/severity-scatter.png)

## Per-lung scores

Right/left extent (0-4) and opacity (0-3) apportion each total by that lung's share of predicted opacity (capped
at 4 and 3). The data has no per-lung ground truth, so these are **not validated**.

## Limitations

- 94 images from 65 patients, scored by 3 raters on figures from papers; wide split-to-split spread.
- The opacity U-Net saw only {o["training"]["images"]} training images (scored patients excluded to keep the
  evaluation clean), so its masks are coarse; held-out Dice {_ms(o["metrics"]["dice_heldout"])}.
- Far from Cohen et al.'s r 0.80 / MAE 1.14, which used a DenseNet pretrained on tens of thousands of images;
  here everything is trained from scratch on CPU on about a thousand images.
- Only COVID-19 images were scored: scores for other diseases or normal images are extrapolations.
"""
