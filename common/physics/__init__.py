"""Physics and imaging models: what a scanner and the body do to photons, as pure, unit-explicit
functions on torch tensors (CPU or CUDA). :mod:`~common.physics.attenuation` holds material mu(E)
from xraydb, the one HU -> mu conversion, the CT-AC map (:func:`ct_to_mu`) and the one
HU -> (material, density) conversion of dosimetry (:func:`hu_to_material`);
:mod:`~common.physics.nuclides` radionuclide data from ICRP-107, decay and SUV;
:mod:`~common.physics.projectors` the SPECT and PET system models with exact adjoints;
:mod:`~common.physics.recon` MLEM/OSEM for any of them; :mod:`~common.physics.noise` Poisson
counts, binomial thinning and split-count pairs. Units: keV, 1/cm, mm (converted to cm once at
the projector boundary), s, Bq, Bq/mL. The names most code needs are re-exported here
(``common.physics.hu_to_mu``, ``common.physics.nuclide``, ...).
"""

from common.physics.attenuation import (
    CARNEY_511KEV,
    CARNEY_SOFT_SLOPE,
    CT_AIR_BELOW_HU,
    CT_BASE_MATERIALS,
    HU_RANGE,
    MATERIAL_DENSITY,
    MATERIALS,
    CTMaterial,
    cortical_bone_hu,
    ct_to_mu,
    hu_to_material,
    hu_to_mu,
    material_mu,
    mixture_mu,
)
from common.physics.nuclides import (
    EXAMPLE_NUCLIDES,
    Radionuclide,
    decay_correct,
    decay_factor,
    mm_to_cm,
    nuclide,
    suv,
)

__all__ = [
    "CARNEY_511KEV",
    "CARNEY_SOFT_SLOPE",
    "CT_AIR_BELOW_HU",
    "CT_BASE_MATERIALS",
    "CTMaterial",
    "HU_RANGE",
    "MATERIAL_DENSITY",
    "MATERIALS",
    "cortical_bone_hu",
    "ct_to_mu",
    "hu_to_material",
    "hu_to_mu",
    "material_mu",
    "mixture_mu",
    "EXAMPLE_NUCLIDES",
    "Radionuclide",
    "decay_correct",
    "decay_factor",
    "mm_to_cm",
    "nuclide",
    "suv",
]
