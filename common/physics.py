"""Photon attenuation, CT-number conversion, radionuclide data, decay and SUV.

Units: energy keV, mu 1/cm, density g/cm3, time s, activity Bq, concentration Bq/mL, length mm
(``mm_to_cm`` converts once, at projector boundaries).

Library boundaries: ``xraydb`` takes energy in eV and returns mu in 1/cm; ``icrp107-database``
(ICRP Publication 107) gives energies in MeV and yields per decay (not normalised).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import xraydb
from icrp107_database import get_icrp107_spectrum

__all__ = [
    "MATERIALS",
    "MATERIAL_DENSITY",
    "CARNEY_511KEV",
    "Radionuclide",
    "material_mu",
    "cortical_bone_hu",
    "hu_to_mu",
    "nuclide",
    "decay_factor",
    "decay_correct",
    "suv",
    "mm_to_cm",
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


@lru_cache(maxsize=4096)
def _mu_scalar(material: str, energy_keV: float, extrapolate: bool) -> float:
    if not math.isfinite(energy_keV) or energy_keV < MIN_ENERGY_KEV:
        raise ValueError(f"energy_keV={energy_keV} is outside the supported range (>= {MIN_ENERGY_KEV} keV).")
    top = MAX_EXTRAPOLATED_ENERGY_KEV if extrapolate else MAX_TABLE_ENERGY_KEV
    if energy_keV > top:
        hint = "" if extrapolate else " (xraydb clamps there silently); pass extrapolate=True for up to 2000 keV"
        raise ValueError(f"energy_keV={energy_keV} is above {top} keV{hint}.")
    e_table = min(energy_keV, MAX_TABLE_ENERGY_KEV)
    mu = float(xraydb.material_mu(_formula(material), e_table * 1e3, density=MATERIAL_DENSITY[material]))
    if energy_keV > MAX_TABLE_ENERGY_KEV:
        # above 800 keV tissue attenuation is > 99% Compton: scale by the Klein-Nishina ratio
        mu *= _klein_nishina(energy_keV) / _klein_nishina(MAX_TABLE_ENERGY_KEV)
    return mu


def material_mu(
    material: str, energy_keV: float | Sequence[float] | np.ndarray, extrapolate: bool = False
) -> float | np.ndarray:
    """Linear attenuation coefficient (total, with coherent) of a named material, from xraydb.

    Args:
        material: one of ``MATERIALS`` (density ``MATERIAL_DENSITY``).
        energy_keV: photon energy in keV, scalar or sequence, within [10, 800] keV.
        extrapolate: allow 800 < E <= 2000 keV by scaling the 800 keV value with the Klein-Nishina
            cross-section ratio (pair production neglected: < ~1% of mu in tissue below 2 MeV).

    Returns:
        mu in 1/cm: a float for a scalar energy, else a numpy array of the energies' shape.

    Raises:
        ValueError: unknown material, or energy outside the supported range.
    """
    _check_material(material)
    if np.ndim(energy_keV) == 0:
        return _mu_scalar(material, float(energy_keV), bool(extrapolate))
    energies = np.asarray(energy_keV, dtype=float)
    return np.array([_mu_scalar(material, float(e), bool(extrapolate)) for e in energies.ravel()]).reshape(
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


@dataclass(frozen=True)
class Radionuclide:
    """Decay data of one radionuclide (ICRP Publication 107).

    Attributes:
        name: ICRP-107 name, e.g. "Lu-177".
        half_life_s: half-life in s.
        photon_lines: ((energy_keV, yield_per_decay), ...) of gamma, X and annihilation photons above
            the threshold given to :func:`nuclide`, sorted by energy.
        photon_MeV_per_decay: total photon energy per decay (all lines, no threshold).
        positron_yield: beta+ per decay.
        beta_mean_MeV_per_decay: sum over beta- and beta+ branches of mean energy x yield.
        electron_MeV_per_decay: beta + internal-conversion + Auger electron energy per decay.
    """

    name: str
    half_life_s: float
    photon_lines: tuple[tuple[float, float], ...]
    photon_MeV_per_decay: float
    positron_yield: float
    beta_mean_MeV_per_decay: float
    electron_MeV_per_decay: float


_TIME_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "y": 365.25 * 86400.0}
EXAMPLE_NUCLIDES = ("F-18", "Ga-68", "Tc-99m", "I-123", "I-131", "In-111", "Lu-177", "Y-90")


def _normalise_name(name: str) -> str:
    # 'lu177', 'Lu177', 'LU-177', 'tc99m' -> ICRP-107 file names 'Lu-177', 'Tc-99m'
    m = re.fullmatch(r"\s*([A-Za-z]{1,2})[-_ ]?(\d{1,3})([mn]\d?)?\s*", str(name), flags=re.IGNORECASE)
    if m is None:
        raise ValueError(f"nuclide {name!r} is not a nuclide name such as {', '.join(EXAMPLE_NUCLIDES)}.")
    return f"{m[1].capitalize()}-{m[2]}{(m[3] or '').lower()}"


def _energy_per_decay(name: str, *kinds: str) -> float:
    return float(sum(s["energies"] @ s["weights"] for s in (get_icrp107_spectrum(name, k) for k in kinds)))


@lru_cache(maxsize=256)
def nuclide(name: str, min_photon_keV: float = 15.0) -> Radionuclide:
    """Decay data of a radionuclide from ``icrp107-database``.

    Args:
        name: e.g. "Lu-177"; spelling variants "Lu177", "lu-177", "Tc99m" are accepted.
        min_photon_keV: photon lines below this energy (keV) are left out of ``photon_lines``.

    Raises:
        ValueError: the name is not in ICRP-107.
    """
    icrp = _normalise_name(name)
    try:
        gamma = get_icrp107_spectrum(icrp, "gamma")
    except Exception as e:  # the package raises a bare Exception for unknown names
        raise ValueError(
            f"nuclide {name!r} (read as {icrp!r}) is not in ICRP-107; e.g. {', '.join(EXAMPLE_NUCLIDES)}."
        ) from e
    photons = [get_icrp107_spectrum(icrp, k) for k in ("gamma", "X", "annihilation")]
    lines = sorted(
        (round(1e3 * float(e), 4), float(w))
        for s in photons
        for e, w in zip(s["energies"], s["weights"])
        if 1e3 * e >= min_photon_keV
    )
    beta = _energy_per_decay(icrp, "beta-", "beta+")
    return Radionuclide(
        name=icrp,
        half_life_s=float(gamma["half_life"]) * _TIME_UNIT_S[gamma["time_unit"]],
        photon_lines=tuple(lines),
        photon_MeV_per_decay=_energy_per_decay(icrp, "gamma", "X", "annihilation"),
        positron_yield=float(get_icrp107_spectrum(icrp, "beta+")["weights"].sum()),
        beta_mean_MeV_per_decay=beta,
        electron_MeV_per_decay=beta + _energy_per_decay(icrp, "IE", "auger"),
    )


def _check_positive(**values: float) -> None:
    for key, v in values.items():
        if not (np.ndim(v) == 0 and math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{key}={v!r} must be a finite positive number.")


def decay_factor(elapsed_s, half_life_s: float):
    """Fraction of activity left after ``elapsed_s``: 2 ** (-elapsed_s / half_life_s).

    ``elapsed_s`` may be a float, numpy array or tensor (negative = before the reference time).
    """
    _check_positive(half_life_s=half_life_s)
    return 0.5 ** (elapsed_s / half_life_s)


def decay_correct(activity, elapsed_s, half_life_s: float):
    """Activity (or concentration) measured ``elapsed_s`` after a reference time, corrected back to it."""
    return activity / decay_factor(elapsed_s, half_life_s)


def suv(concentration_Bq_per_mL, weight_kg: float, injected_Bq: float):
    """Standardised uptake value: C [Bq/mL] x W [g] / A [Bq], with 1 mL = 1 g.

    ``concentration_Bq_per_mL`` may be a float, array or tensor, decay-corrected to the same time
    as ``injected_Bq``.
    """
    _check_positive(weight_kg=weight_kg, injected_Bq=injected_Bq)
    return concentration_Bq_per_mL * (weight_kg * 1000.0 / injected_Bq)


def mm_to_cm(value):
    """Millimetres to centimetres (a float, array, tensor or a tuple such as a spacing)."""
    if isinstance(value, tuple):
        return tuple(v / 10.0 for v in value)
    return value / 10.0
