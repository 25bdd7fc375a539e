"""Emission spectra for radiation transport, from ICRP Publication 107 (``icrp107-database``).

What a decay emits, split the way :mod:`common.dosimetry.montecarlo` transports it:

- photons (gamma, X-ray and annihilation lines) at or above a cutoff (default 10 keV): transported;
  the lines below it are deposited where they are emitted (their mean free path in tissue is below
  2 mm); lines above 2 MeV (beyond the cross-section tables) are counted as escaping and must carry
  less than 0.1% of the emitted energy;
- electrons: the continuous beta spectrum (beta- and beta+, ICRP-107 ``b-spectra``) and the
  discrete internal-conversion and Auger lines, which :mod:`common.dosimetry.electrons` turns into a
  dose point kernel. Positrons are followed like electrons; their two 511 keV annihilation photons
  are ICRP-107's ``annihilation`` line (yield 2 x beta+), emitted at the decay point.

Units: energy keV (MeV where named), yields per decay. Library boundary: icrp107-database gives MeV
and yields per decay, not normalised; ``b-spectra`` is a density per MeV integrating to the beta
yield.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from icrp107_database import get_icrp107_spectrum

from common.physics.nuclides import nuclide as _nuclide

__all__ = ["MAX_PHOTON_KEV", "EmissionSpectrum", "emission_spectrum"]

#: Photons above this energy (keV) are not transported (the cross-section tables of
#: :func:`common.physics.material_mu` stop at 2 MeV; pair production is neglected below it).
MAX_PHOTON_KEV = 2000.0
# Lines above MAX_PHOTON_KEV may carry at most this share of the photon energy (Y-90: 2186 keV, 1.4e-8).
_MAX_UNTRANSPORTED_SHARE = 1e-3


@dataclass(frozen=True)
class EmissionSpectrum:
    """Radiations of one decay of a radionuclide, as the dose engine uses them.

    Attributes:
        name: ICRP-107 name, e.g. "Lu-177".
        half_life_s: half-life in s.
        photon_keV: [L] energies of the transported photon lines (cutoff..2000 keV), keV.
        photon_yield: [L] photons per decay of each line.
        local_photon_MeV: energy per decay of photon lines below the cutoff (deposited at emission).
        escaping_photon_MeV: energy per decay of photon lines above 2 MeV (not transported).
        beta_MeV: [M] energy grid of the continuous beta spectrum (beta- and beta+), MeV.
        beta_density: [M] betas per decay per MeV on that grid, normalised to ``beta_yield``.
        beta_yield: betas (beta- plus beta+) per decay.
        positron_yield: beta+ per decay.
        line_electron_keV: [J] energies of internal-conversion and Auger electron lines, keV.
        line_electron_yield: [J] electrons per decay of each line.
        photon_cutoff_keV: the cutoff used to split transported from local photons.
    """

    name: str
    half_life_s: float
    photon_keV: tuple[float, ...]
    photon_yield: tuple[float, ...]
    local_photon_MeV: float
    escaping_photon_MeV: float
    beta_MeV: tuple[float, ...]
    beta_density: tuple[float, ...]
    beta_yield: float
    positron_yield: float
    line_electron_keV: tuple[float, ...]
    line_electron_yield: tuple[float, ...]
    photon_cutoff_keV: float

    @property
    def photons_per_decay(self) -> float:
        """Transported photons per decay."""
        return float(sum(self.photon_yield))

    @property
    def transported_photon_MeV(self) -> float:
        """Energy per decay of the transported photon lines, MeV."""
        return float(np.dot(self.photon_keV, self.photon_yield)) * 1e-3

    @property
    def beta_MeV_per_decay(self) -> float:
        """Mean beta energy per decay (integral of E x density), MeV."""
        return float(np.trapezoid(np.multiply(self.beta_MeV, self.beta_density), self.beta_MeV))

    @property
    def electron_MeV_per_decay(self) -> float:
        """Electron energy per decay: betas plus conversion and Auger lines, MeV."""
        return self.beta_MeV_per_decay + float(np.dot(self.line_electron_keV, self.line_electron_yield)) * 1e-3

    @property
    def emitted_MeV_per_decay(self) -> float:
        """All energy per decay (neutrinos excluded), MeV: the sum energy conservation checks against."""
        return (
            self.electron_MeV_per_decay
            + self.transported_photon_MeV
            + self.local_photon_MeV
            + self.escaping_photon_MeV
        )


def _lines(name: str, *kinds: str) -> list[tuple[float, float]]:
    out = []
    for kind in kinds:
        s = get_icrp107_spectrum(name, kind)
        out += [(1e3 * float(e), float(w)) for e, w in zip(s["energies"], s["weights"]) if w > 0]
    return sorted(out)


@lru_cache(maxsize=64)
def emission_spectrum(name: str, photon_cutoff_keV: float = 10.0, line_electrons: bool = True) -> EmissionSpectrum:
    """Emissions of a radionuclide per decay, from ICRP-107.

    Args:
        name: nuclide, e.g. "Lu-177", "F-18" (spelling variants as :func:`common.physics.nuclide`).
        photon_cutoff_keV: photon lines below it (keV) are deposited locally, >= 10 keV (the lower end
            of the cross-section tables).
        line_electrons: include internal-conversion and Auger electrons (the physical default).
            ``False`` keeps the beta spectrum only, the source of voxel S-value tables such as
            Lanconelli 2012's (whose Lu-177 energy balance holds 0.133 MeV of electrons per decay,
            the beta mean energy, not the 0.148 MeV with conversion and Auger electrons).

    Returns:
        :class:`EmissionSpectrum`.

    Raises:
        ValueError: unknown nuclide, a cutoff below 10 keV, or photons above 2 MeV carrying more than
            0.1% of the emitted energy (Y-90's 2186 keV line, 1.4e-8 per decay, is fine).
    """
    if not (10.0 <= float(photon_cutoff_keV) < MAX_PHOTON_KEV):
        raise ValueError(f"photon_cutoff_keV={photon_cutoff_keV} must be within [10, {MAX_PHOTON_KEV}) keV.")
    nuc = _nuclide(name)  # validates and normalises the name
    photons = _lines(nuc.name, "gamma", "X", "annihilation")
    transported = [(e, w) for e, w in photons if photon_cutoff_keV <= e <= MAX_PHOTON_KEV]
    local = sum(e * w for e, w in photons if e < photon_cutoff_keV) * 1e-3
    escaping = sum(e * w for e, w in photons if e > MAX_PHOTON_KEV) * 1e-3
    total = (sum(e * w for e, w in photons) * 1e-3) + nuc.electron_MeV_per_decay
    if escaping > _MAX_UNTRANSPORTED_SHARE * max(total, 1e-30):
        raise ValueError(
            f"{nuc.name} emits {escaping:.4g} MeV per decay as photons above {MAX_PHOTON_KEV} keV, more than "
            f"{_MAX_UNTRANSPORTED_SHARE:.0e} of its emitted energy; pair production is not modelled."
        )
    beta_yield = float(sum(get_icrp107_spectrum(nuc.name, k)["weights"].sum() for k in ("beta-", "beta+")))
    spectrum = get_icrp107_spectrum(nuc.name, "b-spectra")
    e_beta, density = np.asarray(spectrum["energies"], float), np.asarray(spectrum["weights"], float)
    if beta_yield > 0 and len(e_beta) > 1:
        density = density * (beta_yield / np.trapezoid(density, e_beta))
    else:
        e_beta, density = np.zeros(0), np.zeros(0)
    electrons = _lines(nuc.name, "IE", "auger") if line_electrons else []
    return EmissionSpectrum(
        name=nuc.name,
        half_life_s=nuc.half_life_s,
        photon_keV=tuple(e for e, _ in transported),
        photon_yield=tuple(w for _, w in transported),
        local_photon_MeV=float(local),
        escaping_photon_MeV=float(escaping),
        beta_MeV=tuple(e_beta.tolist()),
        beta_density=tuple(density.tolist()),
        beta_yield=beta_yield,
        positron_yield=nuc.positron_yield,
        line_electron_keV=tuple(e for e, _ in electrons),
        line_electron_yield=tuple(w for _, w in electrons),
        photon_cutoff_keV=float(photon_cutoff_keV),
    )
