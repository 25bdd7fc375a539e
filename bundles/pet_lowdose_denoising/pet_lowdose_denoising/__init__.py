"""Python of the ``pet_lowdose_denoising`` bundle, referenced from its configs (MONAI model-zoo
bundles call this folder ``scripts/``; it carries the bundle's name so that it cannot collide with
this repository's top-level ``scripts`` package or with another bundle's code in one process).

- :mod:`~pet_lowdose_denoising.dataset`: the ``pet_lowdose_denoising`` and
  ``pet_lowdose_split_counts`` dataset tasks (registered on import).
- :mod:`~pet_lowdose_denoising.transforms`: SUV normalisation, the dose-level channel, datalist items.
- :mod:`~pet_lowdose_denoising.baseline`: the Gaussian post-filter tuned per dose reduction factor.
- :mod:`~pet_lowdose_denoising.evaluation`: image, lesion and ceiling metrics per DRF.
"""
