"""Python of the ``pet_nac_to_pct`` bundle, referenced from its configs (MONAI model-zoo bundles
call this folder ``scripts/``; it carries the bundle's name so that it cannot collide with this
repository's top-level ``scripts`` package or with another bundle's code in one process).

- :mod:`~pet_nac_to_pct.dataset`: the ``pet_nac_to_pct`` dataset task (registered on import).
- :mod:`~pet_nac_to_pct.baseline`: the 3-class segmentation mu-map of the NAC PET (no CT).
- :mod:`~pet_nac_to_pct.losses`: :class:`~pet_nac_to_pct.losses.AttenuationLoss`.
- :mod:`~pet_nac_to_pct.evaluation`: the attenuation-correction task metric (regional SUV error).

The input checks (NaN, CT in HU, an attenuation-corrected PET given as NAC) are shared with the other
PET bundle: :mod:`common.learning.transforms`.
"""
