"""Radionuclide data (ICRP Publication 107), decay, SUV and length units.

Units: energy keV (MeV where named), time s, activity Bq, concentration Bq/mL, length mm
(:func:`mm_to_cm` converts once, at projector boundaries). Library boundary: ``icrp107-database``
gives energies in MeV and yields per decay (not normalised).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from icrp107_database import get_icrp107_spectrum

__all__ = ["Radionuclide", "EXAMPLE_NUCLIDES", "nuclide", "decay_factor", "decay_correct", "suv", "mm_to_cm"]


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
