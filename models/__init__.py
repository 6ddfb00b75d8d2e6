"""Chest X-ray models: lung segmentation, 4-class classification, Cohen severity, heatmaps.

Entry points: :func:`models.preprocessing.load_image`, :func:`models.inference.get_analyzer`
(``Analyzer.analyze``), the registry in :mod:`models.registry` and the CLI sub-apps in
:mod:`models.training.cli`. Nothing heavy is imported here.
"""
