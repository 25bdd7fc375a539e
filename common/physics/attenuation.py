"""Photon attenuation: material mu(E) from xraydb, CT numbers (HU) -> mu at any energy, the
CT-based attenuation-correction map with its air rule (:func:`ct_to_mu`), and CT numbers ->
(material, density) for dosimetry (:func:`hu_to_material`), the mixture model :func:`hu_to_mu`
already is.

Units: energy keV, mu 1/cm, density g/cm3. Library boundary: ``xraydb`` takes energy in eV and
returns mu in 1/cm.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
import xraydb

__all__ = [
    "MATERIALS",
    "MATERIAL_DENSITY",
    "CARNEY_511KEV",
    "CARNEY_SOFT_SLOPE",
    "HU_RANGE",
    "CT_AIR_BELOW_HU",
    "material_mu",
    "cortical_bone_hu",
    "hu_to_mu",
    "ct_to_mu",
    "MU_KINDS",
    "CT_BASE_MATERIALS",
    "CTMaterial",
    "hu_to_material",
    "mixture_mu",
]

# Mass fractions. ICRU-44 tissues, dry air and water: NIST SRD 126 (X-ray mass attenuation
# coefficients) Table 2. Lung: ICRU-44 lung composition at inflated density 0.26 g/cm3
# (REFERENCE.md section 1). Trabecular bone: adult spongiosa, Woodard & White 1986 / ICRU-46,
# 1.18 g/cm3 (the row Schneider et al. 2000 use). xraydb has no tissue materials, so this
# small composition table is the only hand-typed data; every mu comes from xraydb.
MATERIALS: dict[str, dict[str, float]] = {
    "air": {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827},
    "lung": {"H": 0.103, "C": 0.105, "N": 0.031, "O": 0.749, "Na": 0.002, "P": 0.002, "S": 0.003, "Cl": 0.003,
             "K": 0.002},
    "adipose": {"H": 0.114, "C": 0.598, "N": 0.007, "O": 0.278, "Na": 0.001, "S": 0.001, "Cl": 0.001},
    "soft_tissue": {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003, "S": 0.003,
                    "Cl": 0.002, "K": 0.003},
    "water": {"H": 0.111898, "O": 0.888102},
    "muscle": {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.710, "Na": 0.001, "P": 0.002, "S": 0.003, "Cl": 0.001,
               "K": 0.004},
    "trabecular_bone": {"H": 0.085, "C": 0.404, "N": 0.028, "O": 0.367, "Na": 0.001, "Mg": 0.001, "P": 0.034,
                        "S": 0.002, "Cl": 0.002, "K": 0.001, "Ca": 0.074, "Fe": 0.001},
    "cortical_bone": {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002, "P": 0.103,
                      "S": 0.003, "Ca": 0.225},
}
MATERIAL_DENSITY: dict[str, float] = {
    "air": 0.001205,
    "lung": 0.26,
    "adipose": 0.95,
    "soft_tissue": 1.06,
    "water": 1.0,
    "muscle": 1.05,
    "trabecular_bone": 1.18,
    "cortical_bone": 1.92,
}

MIN_ENERGY_KEV = 10.0
MAX_TABLE_ENERGY_KEV = 800.0  # xraydb's Elam tables stop here and clamp silently above
MAX_EXTRAPOLATED_ENERGY_KEV = 2000.0  # pair production stays < ~1% of mu in tissue below 2 MeV
ELECTRON_REST_KEV = 510.99895

# Carney et al., Med Phys 2006;33:976, bilinear CT -> 511 keV (REFERENCE.md section 2):
# mu = 9.6e-5 (HU + 1000) for HU <= BP, a (HU + 1000) + b above; kVp -> (a, b, BP).
CARNEY_511KEV: dict[int, tuple[float, float, float]] = {
    80: (3.64e-5, 0.0626, 50.0),
    100: (4.43e-5, 0.0544, 52.0),
    110: (4.92e-5, 0.0488, 43.0),
    120: (5.10e-5, 0.0471, 47.0),
    130: (5.51e-5, 0.0424, 37.0),
    140: (5.64e-5, 0.0408, 30.0),
}
CARNEY_SOFT_SLOPE = 9.6e-5


def _check_material(material: str) -> None:
    if material not in MATERIALS:
        raise ValueError(f"material {material!r} is unknown; known materials: {sorted(MATERIALS)}.")


def _klein_nishina(energy_keV: float) -> float:
    """Klein-Nishina total cross-section per electron, in units of 2 pi r_e^2."""
    k = energy_keV / ELECTRON_REST_KEV
    lg = math.log1p(2 * k)
    return (1 + k) / k**2 * (2 * (1 + k) / (1 + 2 * k) - lg / k) + lg / (2 * k) - (1 + 3 * k) / (1 + 2 * k) ** 2


@lru_cache(maxsize=None)
def _formula(material: str) -> str:
    # xraydb wants a formula: convert mass fractions w_i to atom ratios n_i = 100 w_i / A_i
    return "".join(f"{el}{100.0 * w / xraydb.atomic_mass(el):.6f}" for el, w in MATERIALS[material].items())


#: Interaction kinds of :func:`material_mu` (xraydb's names): all, photoelectric, coherent (Rayleigh),
#: incoherent (Compton).
MU_KINDS = ("total", "photo", "coh", "incoh")
# Above 800 keV (xraydb clamps there) each kind is scaled from its 800 keV value: Compton (and the
# total, > 99% Compton in tissue) by the Klein-Nishina ratio, photoelectric by E^-3, coherent by E^-2.
_EXTRAPOLATION_POWER = {"photo": 3.0, "coh": 2.0}


@lru_cache(maxsize=8192)
def _mu_scalar(material: str, energy_keV: float, extrapolate: bool, kind: str = "total") -> float:
    if not math.isfinite(energy_keV) or energy_keV < MIN_ENERGY_KEV:
        raise ValueError(f"energy_keV={energy_keV} is outside the supported range (>= {MIN_ENERGY_KEV} keV).")
    top = MAX_EXTRAPOLATED_ENERGY_KEV if extrapolate else MAX_TABLE_ENERGY_KEV
    if energy_keV > top:
        hint = "" if extrapolate else " (xraydb clamps there silently); pass extrapolate=True for up to 2000 keV"
        raise ValueError(f"energy_keV={energy_keV} is above {top} keV{hint}.")
    e_table = min(energy_keV, MAX_TABLE_ENERGY_KEV)
    mu = float(xraydb.material_mu(_formula(material), e_table * 1e3, density=MATERIAL_DENSITY[material], kind=kind))
    if energy_keV > MAX_TABLE_ENERGY_KEV:
        if kind in _EXTRAPOLATION_POWER:
            mu *= (MAX_TABLE_ENERGY_KEV / energy_keV) ** _EXTRAPOLATION_POWER[kind]
        else:  # above 800 keV tissue attenuation is > 99% Compton: scale by the Klein-Nishina ratio
            mu *= _klein_nishina(energy_keV) / _klein_nishina(MAX_TABLE_ENERGY_KEV)
    return mu


def material_mu(
    material: str, energy_keV: float | Sequence[float] | np.ndarray, extrapolate: bool = False, kind: str = "total"
) -> float | np.ndarray:
    """Linear attenuation coefficient of a named material, from xraydb.

    Args:
        material: one of ``MATERIALS`` (density ``MATERIAL_DENSITY``).
        energy_keV: photon energy in keV, scalar or sequence, within [10, 800] keV.
        extrapolate: allow 800 < E <= 2000 keV by scaling the 800 keV value with the Klein-Nishina
            cross-section ratio (pair production neglected: < ~1% of mu in tissue below 2 MeV);
            photoelectric by E^-3 and coherent by E^-2 (each < 0.3% of mu there).
        kind: one of :data:`MU_KINDS`: "total" (with coherent), "photo", "coh" or "incoh".

    Returns:
        mu in 1/cm: a float for a scalar energy, else a numpy array of the energies' shape.

    Raises:
        ValueError: unknown material or kind, or energy outside the supported range.
    """
    _check_material(material)
    if kind not in MU_KINDS:
        raise ValueError(f"kind {kind!r} is unknown; known kinds: {MU_KINDS}.")
    if np.ndim(energy_keV) == 0:
        return _mu_scalar(material, float(energy_keV), bool(extrapolate), kind)
    energies = np.asarray(energy_keV, dtype=float)
    return np.array([_mu_scalar(material, float(e), bool(extrapolate), kind) for e in energies.ravel()]).reshape(
        energies.shape
    )


def _check_kvp(kvp: int) -> tuple[float, float, float]:
    if kvp not in CARNEY_511KEV:
        raise ValueError(f"kvp={kvp!r} is not tabulated; known CT tube voltages: {sorted(CARNEY_511KEV)}.")
    return CARNEY_511KEV[kvp]


@lru_cache(maxsize=None)
def cortical_bone_hu(kvp: int = 120) -> float:
    """CT number assumed for ICRU-44 cortical bone (1.92 g/cm3) at a tube voltage.

    It is the HU at which the Carney 2006 511 keV bilinear reaches xraydb's mu(511 keV) of ICRU-44
    cortical bone, so the PET and SPECT branches of :func:`hu_to_mu` agree on what bone is:
    about 1995 HU at 80 kVp, 1441 HU at 120 kVp, 1319 HU at 140 kVp. The implied 140.5 keV bone
    slopes (9.7e-5 /cm/HU at 120 kVp, 1.06e-4 at 140 kVp) lie 7-15% below Brown 2008's 1.14e-4 and
    within 7% of the GE Optima 120/140 kVp vendor slopes (REFERENCE.md section 2).
    """
    a, b, _ = _check_kvp(kvp)
    return (material_mu("cortical_bone", 511.0) - b) / a - 1000.0


def hu_to_mu(hu: torch.Tensor, energy_keV: float, kvp: int = 120, extrapolate: bool = False) -> torch.Tensor:
    """Linear attenuation coefficient map from CT numbers; the single HU -> mu conversion of the project.

    - 511 keV (within 1 keV): Carney et al. 2006 bilinear with kVp-dependent bone slope.
    - other energies: piecewise-linear mixing with xraydb mu(E): HU <= 0 air-water mix
      (-1000 HU = air, 0 HU = water); HU > 0 water-bone mix, ICRU-44 cortical bone at
      :func:`cortical_bone_hu` (kvp).

    Args:
        hu: CT numbers, any shape, any device. Integer input gives float32 output.
        energy_keV: photon energy in keV (10..800, or up to 2000 with ``extrapolate``).
        kvp: CT tube voltage, one of ``CARNEY_511KEV`` (80, 100, 110, 120, 130, 140).
        extrapolate: passed to :func:`material_mu`.

    Returns:
        mu in 1/cm, same shape and device as ``hu``, clipped at >= 0.
    """
    hu = torch.as_tensor(hu)
    if not hu.is_floating_point():
        hu = hu.float()
    if not torch.isfinite(hu).all():
        raise ValueError("hu contains NaN or Inf.")
    a, b, bp = _check_kvp(kvp)
    if abs(energy_keV - 511.0) <= 1.0:
        mu = torch.where(hu <= bp, CARNEY_SOFT_SLOPE * (hu + 1000.0), a * (hu + 1000.0) + b)
    else:
        mu_air, mu_water = material_mu("air", energy_keV, extrapolate), material_mu("water", energy_keV, extrapolate)
        bone_slope = (material_mu("cortical_bone", energy_keV, extrapolate) - mu_water) / cortical_bone_hu(kvp)
        soft = mu_water + (mu_water - mu_air) * hu / 1000.0
        mu = torch.where(hu <= 0, soft, mu_water + bone_slope * hu)
    return mu.clamp_min(0.0)


# Range of CT numbers a pseudo-CT is clipped to before conversion (SynthRAD clips to [-1024, 3000]).
HU_RANGE = (-1000.0, 3000.0)
#: Named rule of CT-based attenuation correction: CT numbers below -950 HU are air (mu = 0).
#: CT noise in air (10-20 HU here) is zero-mean, but mu cannot be negative, so a voxel-by-voxel
#: conversion counts its positive half as attenuation: about +2 % SUV through a torso in this
#: project's phantoms, an error that no denoised pseudo-CT can reproduce. Clinical CTAC removes air
#: (and the bed) before conversion for the same reason. Lung stays above it (phantom lung >= -990 HU,
#: 0.1st percentile -950, median -835; Kinahan et al. 2003 lung -900..-500 HU).
CT_AIR_BELOW_HU = -950.0


def ct_to_mu(
    hu: torch.Tensor, energy_keV: float = 511.0, kvp: int = 120, air_below_hu: float | None = CT_AIR_BELOW_HU
) -> torch.Tensor:
    """mu-map (1/cm) of a CT or pseudo-CT in HU, the CT-based attenuation correction of this project.

    HU are clipped to :data:`HU_RANGE`; voxels below ``air_below_hu`` are set to air (named rule
    :data:`CT_AIR_BELOW_HU`; ``None`` keeps them); then :func:`hu_to_mu`.

    Args:
        hu: CT numbers [X, Y, Z] (any shape, any device).
        energy_keV: photon energy (511 for PET).
        kvp: CT tube voltage of the HU -> mu conversion.
        air_below_hu: CT numbers below it are air; ``None``: no air rule.
    """
    hu = torch.as_tensor(hu)
    if not hu.is_floating_point():
        hu = hu.float()
    hu = hu.clamp(*HU_RANGE)
    if air_below_hu is not None:
        hu = torch.where(hu < air_below_hu, torch.full_like(hu, HU_RANGE[0]), hu)
    return hu_to_mu(hu, energy_keV, kvp)


#: Base materials of the CT mixture model of :func:`hu_to_material`, in the order of its first axis.
CT_BASE_MATERIALS = ("air", "water", "cortical_bone")


class CTMaterial(NamedTuple):
    """Material and density of each CT voxel, as mass fractions of :data:`CT_BASE_MATERIALS`.

    Attributes:
        names: base material names (keys of ``MATERIALS``), length K.
        mass_fraction: [K, *shape] mass fraction of each base material (sums to 1 over K).
        density: [*shape] mass density in g/cm3.
    """

    names: tuple[str, ...]
    mass_fraction: torch.Tensor
    density: torch.Tensor


def hu_to_material(hu: torch.Tensor, kvp: int = 120) -> CTMaterial:
    """CT numbers -> (material, density): the one conversion of CT to tissue of the project's dosimetry.

    It is the mixture model that the SPECT-energy branch of :func:`hu_to_mu` is, made explicit, so a
    Monte Carlo that transports photons through these materials attenuates exactly as
    :func:`hu_to_mu` says, at every energy other than 511 keV (there :func:`hu_to_mu` uses Carney's
    bilinear fit; the two agree within 4% from -950 to 3000 HU):

    - HU <= 0: air and water mixed by volume, water volume fraction (HU + 1000) / 1000;
    - 0 < HU <= :func:`cortical_bone_hu` (kvp): water and ICRU-44 cortical bone (1.92 g/cm3) mixed by
      volume, bone volume fraction HU / cortical_bone_hu;
    - above: cortical bone composition, its density continued along the same line
      (1 + 0.92 HU / cortical_bone_hu g/cm3); mu then differs from :func:`hu_to_mu`'s linear
      extrapolation by < 3% up to 3000 HU (the mass attenuation of bone and water differ by up to
      7% at 100-800 keV).

    CT numbers are clipped to :data:`HU_RANGE` first. Densities: air 0.001205, water 1.0 (so 40 HU,
    a typical soft tissue, is 1.026 g/cm3 and -850 HU lung 0.15 g/cm3).

    Args:
        hu: CT numbers, any shape [*shape], any device.
        kvp: CT tube voltage (sets :func:`cortical_bone_hu`), one of ``CARNEY_511KEV``.

    Returns:
        :class:`CTMaterial` with ``mass_fraction`` [3, *shape] over :data:`CT_BASE_MATERIALS` and
        ``density`` [*shape] in g/cm3, float32 (float64 for float64 input), on ``hu``'s device.

    Raises:
        ValueError: NaN or Inf in ``hu``, or an unknown ``kvp``.
    """
    hu = torch.as_tensor(hu)
    if not hu.is_floating_point():
        hu = hu.float()
    if not torch.isfinite(hu).all():
        raise ValueError("hu contains NaN or Inf.")
    hu_bone = cortical_bone_hu(kvp)
    hu = hu.clamp(*HU_RANGE)
    rho = [MATERIAL_DENSITY[m] for m in CT_BASE_MATERIALS]
    f_air = (-hu / 1000.0).clamp_min(0.0)  # volume fractions
    f_bone = (hu / hu_bone).clamp_min(0.0)
    f_water = (1.0 - f_air - f_bone).clamp_min(0.0)
    partial = torch.stack([f_air * rho[0], f_water * rho[1], f_bone * rho[2]])  # g/cm3 of each material
    dense_bone = hu > hu_bone  # pure bone on the water-bone density line
    partial[2] = torch.where(dense_bone, rho[1] + (rho[2] - rho[1]) * hu / hu_bone, partial[2])
    density = partial.sum(0)
    return CTMaterial(CT_BASE_MATERIALS, partial / density, density)


def mixture_mu(material: CTMaterial, energy_keV: float, kind: str = "total", extrapolate: bool = False) -> torch.Tensor:
    """Linear attenuation coefficient map of a :class:`CTMaterial` (Bragg additivity of mass attenuation).

    mu = density x sum_k w_k (mu/rho)_k(E), with (mu/rho)_k from :func:`material_mu`.

    Args:
        material: from :func:`hu_to_material`.
        energy_keV: photon energy in keV (10..800, or up to 2000 with ``extrapolate``).
        kind: one of :data:`MU_KINDS`.
        extrapolate: passed to :func:`material_mu`.

    Returns:
        mu in 1/cm, [*shape] like ``material.density``.
    """
    mass_mu = torch.tensor(
        [material_mu(m, energy_keV, extrapolate, kind) / MATERIAL_DENSITY[m] for m in material.names],
        dtype=material.density.dtype,
        device=material.density.device,
    )
    return material.density * torch.einsum("k...,k->...", material.mass_fraction, mass_mu)
