"""Training, evaluation and release of the node's models (never imported by the runtime).

The node loads and runs models through :mod:`models` (networks, preprocessing,
inference, segmentation, severity, explain, result, registry, retrieval);
everything here builds corpora, fits networks, measures them and writes the
registry and the model cards:

- :mod:`models.training.corpus`: the training corpus cache from ``../shared/data``;
- :mod:`models.training.fit`: pretraining, LungNet (from the encoder and from scratch), severity
  protocols;
- :mod:`models.training.release`: weights and metrics into the registry;
- :mod:`models.training.retrieval`: the similar-case projection;
- :mod:`models.training.extract`, :mod:`models.training.sources`, :mod:`models.training.round3`:
  the lung-opacity classifier (LungNet run once over seven sources, leave-one-source-out);
- :mod:`models.training.heat`, ``orientation``, ``outline_dice``, ``contact_sheet``, ``variants``,
  ``card3``: round-3 measurements (heat in the lungs, turned films, outlines, the card's tables);
- :mod:`models.training.cards`: the model cards;
- :mod:`models.training.evaluation`: metrics;
- :mod:`models.training.cli`: ``cxr-node train`` and ``cxr-node eval``.
"""
