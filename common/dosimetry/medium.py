"""The voxelized medium photons and electrons cross: composition and density per voxel from CT
(:func:`common.physics.hu_to_material`), and the photon interaction tables the Monte Carlo looks up.

A voxel holds partial densities c_k (g/cm3) of the base materials k (air, water, cortical bone for a
CT), so any of its coefficients is a Bragg-additive sum: mu_x(E) = sum_k c_k (mu_x/rho)_k(E) with the
mass coefficients of xraydb (:func:`common.physics.material_mu`), and the electron density relative
to water is sum_k c_k (Z/A)_k / (Z/A)_water.

Photon interactions transported: photoelectric absorption and incoherent (Compton) scattering.
Coherent (Rayleigh) scattering, 1-2.5% of mu in tissue at 100-200 keV and < 0.5% above 350 keV, is
left out of the transport: it deposits no energy and deflects photons by small angles, so treating it
as no interaction (forward scattering) is the approximation made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import xraydb

from common.dosimetry.electrons import WATER_Z_OVER_A
from common.dosimetry.grid import LogGrid
from common.dosimetry.inputs import check_spacing_mm
from common.errors import InputError
from common.physics.attenuation import MATERIAL_DENSITY, MATERIALS, CTMaterial, hu_to_material, material_mu

__all__ = ["PHOTON_GRID", "Medium", "PhotonTables", "z_over_a", "compton_transfer_fraction"]

#: Energy grid (keV) of the photon tables: 10 keV .. 2 MeV, 256 nodes (2.1% apart).
PHOTON_GRID = LogGrid(10.0, 2000.0, 256)


@lru_cache(maxsize=None)
def z_over_a(material: str) -> float:
    """Electrons per nucleon (mol/g) of a material of ``MATERIALS``: sum_i w_i Z_i / A_i."""
    if material not in MATERIALS:
        raise ValueError(f"material {material!r} is unknown; known materials: {sorted(MATERIALS)}.")
    return sum(w * xraydb.atomic_number(el) / xraydb.atomic_mass(el) for el, w in MATERIALS[material].items())


def compton_transfer_fraction(energy_keV: np.ndarray, cutoff_keV: float = 10.0) -> np.ndarray:
    """Mean fraction of a photon's energy left in the medium by one Klein-Nishina Compton scattering.

    The recoil electron's energy 1 - E'/E, or all of it when the scattered photon falls below
    ``cutoff_keV`` (the transport deposits such photons in place). Numerical integration over
    cos(theta) of the Klein-Nishina cross section.

    Args:
        energy_keV: [G] photon energies, keV.
        cutoff_keV: scattered photons below it are absorbed.

    Returns:
        [G] fractions in (0, 1).
    """
    from common.dosimetry.electrons import ELECTRON_REST_KEV

    e = np.asarray(energy_keV, dtype=float)[:, None]
    cos = np.linspace(-1.0, 1.0, 4001)[None, :]
    ratio = 1.0 / (1.0 + e / ELECTRON_REST_KEV * (1.0 - cos))  # E'/E
    dsigma = ratio**2 * (ratio + 1.0 / ratio - (1.0 - cos**2))
    kept = np.where(e * ratio < cutoff_keV, 1.0, 1.0 - ratio)
    return np.trapezoid(dsigma * kept, cos, axis=1) / np.trapezoid(dsigma, cos, axis=1)


@dataclass
class Medium:
    """Voxelized medium on a regular grid.

    Attributes:
        names: base material names (keys of ``MATERIALS``), length K.
        partial_density: [V, K] g/cm3 of each base material per voxel, V = X*Y*Z in C order (float32).
        shape: (X, Y, Z) voxels.
        spacing_mm: voxel size (mm) along X, Y, Z.
    """

    names: tuple[str, ...]
    partial_density: torch.Tensor
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]

    def __post_init__(self):
        self.spacing_mm = check_spacing_mm(self.spacing_mm)
        v = math.prod(self.shape)
        if self.partial_density.shape != (v, len(self.names)):
            raise InputError(
                f"partial_density must be [{v}, {len(self.names)}] for shape {self.shape}, "
                f"got {tuple(self.partial_density.shape)}."
            )

    @classmethod
    def from_material(cls, material: CTMaterial, spacing_mm: float | Sequence[float]) -> Medium:
        """From :func:`common.physics.hu_to_material` output ([K, X, Y, Z] fractions, [X, Y, Z] density)."""
        density = material.density.float()
        if density.dim() != 3:
            raise InputError(f"the CT must be 3D [X, Y, Z], got shape {tuple(density.shape)}.")
        partial = (material.mass_fraction.float() * density).reshape(len(material.names), -1).T.contiguous()
        return cls(tuple(material.names), partial, tuple(density.shape), spacing_mm)

    @classmethod
    def from_ct(cls, hu: torch.Tensor, spacing_mm: float | Sequence[float], kvp: int = 120) -> Medium:
        """From a CT in HU [X, Y, Z] through :func:`common.physics.hu_to_material`."""
        hu = torch.as_tensor(hu)
        if hu.dim() != 3:
            raise InputError(f"the CT must be 3D [X, Y, Z] in HU, got shape {tuple(hu.shape)}.")
        if not torch.isfinite(hu.float()).all():
            raise InputError("the CT contains NaN or Inf.")
        return cls.from_material(hu_to_material(hu, kvp), spacing_mm)

    @classmethod
    def uniform(
        cls,
        material: str,
        shape: Sequence[int],
        spacing_mm: float | Sequence[float],
        density: float | None = None,
        device: torch.device | str | None = None,
    ) -> Medium:
        """A homogeneous medium of one material of ``MATERIALS`` (density g/cm3, default its own)."""
        if material not in MATERIALS:
            raise ValueError(f"material {material!r} is unknown; known materials: {sorted(MATERIALS)}.")
        rho = MATERIAL_DENSITY[material] if density is None else float(density)
        shape = tuple(int(s) for s in shape)
        partial = torch.full((math.prod(shape), 1), rho, dtype=torch.float32, device=device)
        return cls((material,), partial, shape, spacing_mm)  # type: ignore[arg-type]

    @property
    def device(self) -> torch.device:
        return self.partial_density.device

    @property
    def spacing_cm(self) -> tuple[float, float, float]:
        return tuple(s / 10.0 for s in self.spacing_mm)  # type: ignore[return-value]

    @property
    def density(self) -> torch.Tensor:
        """[V] mass density, g/cm3."""
        return self.partial_density.sum(1)

    @property
    def electron_density(self) -> torch.Tensor:
        """[V] electron density relative to water (electrons per cm3 / water's)."""
        za = torch.tensor([z_over_a(m) for m in self.names], dtype=self.partial_density.dtype, device=self.device)
        return self.partial_density @ za / WATER_Z_OVER_A

    def to(self, device: torch.device | str) -> Medium:
        return Medium(self.names, self.partial_density.to(device), self.shape, self.spacing_mm)


@dataclass
class PhotonTables:
    """Mass attenuation tables of a medium's base materials and its Woodcock majorant.

    Attributes:
        photo: [G, K] photoelectric mass attenuation, cm2/g, on :data:`PHOTON_GRID`.
        incoh: [G, K] incoherent (Compton) mass attenuation, cm2/g.
        transfer: [G, K] mass energy-transfer coefficient of this transport, cm2/g:
            photo + incoh x :func:`compton_transfer_fraction` (what the track-length estimator scores).
        majorant: [G] the largest photo + incoherent mu (1/cm) of any voxel at each node; linear
            interpolation keeps it an upper bound of every voxel's interpolated mu.
    """

    photo: torch.Tensor
    incoh: torch.Tensor
    transfer: torch.Tensor
    majorant: torch.Tensor

    @classmethod
    def build(cls, medium: Medium, cutoff_keV: float = 10.0, chunk: int = 1 << 16) -> PhotonTables:
        """Tables of ``medium`` (photons scattered below ``cutoff_keV`` are absorbed in place)."""
        energies = PHOTON_GRID.nodes().tolist()
        tables = []
        for kind in ("photo", "incoh"):
            columns = [
                torch.tensor(material_mu(m, energies, extrapolate=True, kind=kind)) / MATERIAL_DENSITY[m]
                for m in medium.names
            ]
            tables.append(torch.stack(columns, 1).to(medium.device, torch.float32))
        fraction = torch.from_numpy(compton_transfer_fraction(np.asarray(energies), cutoff_keV))
        transfer = tables[0] + tables[1] * fraction.to(tables[1]).unsqueeze(1)
        total = tables[0] + tables[1]  # [G, K]
        majorant = torch.zeros(PHOTON_GRID.n, dtype=torch.float32, device=medium.device)
        for start in range(0, medium.partial_density.shape[0], chunk):
            block = medium.partial_density[start : start + chunk] @ total.T  # [chunk, G]
            majorant = torch.maximum(majorant, block.amax(0))
        return cls(tables[0], tables[1], transfer, majorant * (1 + 1e-5) + 1e-12)

    def mu(
        self, partial_density: torch.Tensor, index: torch.Tensor, frac: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Photoelectric and Compton mu (1/cm), each [N], of voxels with ``partial_density`` [N, K]
        at energies located on :data:`PHOTON_GRID` (``index``, ``frac`` from ``PHOTON_GRID.locate``)."""
        photo = (partial_density * PHOTON_GRID.interp(self.photo, index, frac)).sum(1)
        incoh = (partial_density * PHOTON_GRID.interp(self.incoh, index, frac)).sum(1)
        return photo, incoh

    def mu_max(self, index: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
        """[N] majorant mu (1/cm) at located energies."""
        return PHOTON_GRID.interp(self.majorant, index, frac)
