"""Voxel S-value (VSV) kernels computed with the Monte Carlo engine, and the convolution dosimetry
baselines built on them:

- :func:`vsv_dose_rate`: activity per voxel convolved with the water kernel (MIRD Pamphlet 17);
- :func:`density_scaled_vsv_dose_rate`: the same, each target voxel scaled by rho_kernel / rho(CT)
  (dose is energy over mass; the kernel's energy pattern is kept), density from the one CT
  conversion :func:`common.physics.hu_to_material`, as the Monte Carlo uses;
- :func:`local_deposition_dose_rate`: all electron energy (optionally all energy) absorbed in the
  voxel where it is emitted.

Units: activity Bq/mL, spacing mm, kernel Gy/(Bq s) (x 1e9 = mGy/(MBq s), the unit of published
tables), dose rate Gy/s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from common.dosimetry.inputs import MEV_TO_J, check_activity, check_same_shape, check_spacing_mm, voxel_volume_mL
from common.dosimetry.medium import Medium
from common.dosimetry.montecarlo import monte_carlo_dose_rate
from common.dosimetry.spectra import emission_spectrum
from common.errors import InputError
from common.physics.attenuation import hu_to_material

__all__ = [
    "VoxelSValues",
    "voxel_s_values",
    "vsv_dose_rate",
    "density_scaled_vsv_dose_rate",
    "local_deposition_dose_rate",
]


@dataclass
class VoxelSValues:
    """A voxel S-value kernel: dose rate per unit activity in the source voxel at the centre.

    Attributes:
        kernel: [2h+1, 2h+1, 2h+1] Gy/(Bq s); the source voxel is ``kernel[h, h, h]``.
        std: [2h+1, 2h+1, 2h+1] statistical standard error, Gy/(Bq s).
        nuclide: ICRP-107 name.
        spacing_mm: voxel size (mm).
        material: medium of the kernel (a key of ``MATERIALS``).
        density: its density, g/cm3.
    """

    kernel: torch.Tensor
    std: torch.Tensor
    nuclide: str
    spacing_mm: tuple[float, float, float]
    material: str
    density: float

    @property
    def half_width(self) -> int:
        return self.kernel.shape[0] // 2

    def s(self, i: int, j: int, k: int) -> float:
        """S(i, j, k) in mGy/(MBq s), the unit of published tables (indices relative to the source)."""
        h = self.half_width
        return float(self.kernel[h + i, h + j, h + k]) * 1e9


def voxel_s_values(
    nuclide: str = "Lu-177",
    spacing_mm: float | Sequence[float] = 4.0,
    half_width: int = 10,
    material: str = "water",
    density: float | None = None,
    n_photons: int = 1_000_000,
    n_electrons: int | None = None,
    n_batches: int = 10,
    seed: int = 0,
    margin: int | None = None,
    line_electrons: bool = True,
    device: torch.device | str | None = None,
) -> VoxelSValues:
    """Voxel S-values of a nuclide in a homogeneous medium, by :func:`monte_carlo_dose_rate`.

    The source voxel sits at the centre of a cube of ``2 (half_width + margin) + 1`` voxels of the
    medium (the margin gives the kernel's outer voxels their scatter from beyond); the kernel is the
    central ``2 half_width + 1`` cube.

    Args:
        nuclide: ICRP-107 nuclide.
        spacing_mm: voxel size in mm.
        half_width: h, the kernel spans -h..h voxels along each axis.
        material: a key of ``MATERIALS`` ("water" for the classical VSV).
        density: g/cm3 (default the material's).
        n_photons, n_electrons, n_batches, seed, line_electrons: as :func:`monte_carlo_dose_rate`.
        margin: voxels of medium beyond the kernel on each side (default ``half_width // 2``).
        device: where to run (default CPU).

    Returns:
        :class:`VoxelSValues` in Gy/(Bq s).
    """
    spacing = check_spacing_mm(spacing_mm)
    if int(half_width) < 0:
        raise InputError(f"half_width={half_width} must be >= 0.")
    h = int(half_width)
    margin = h // 2 if margin is None else int(margin)
    n = 2 * (h + margin) + 1
    c = h + margin
    medium = Medium.uniform(material, (n, n, n), spacing, density, device)
    activity = torch.zeros(n, n, n, device=device)
    activity[c, c, c] = 1.0 / voxel_volume_mL(spacing)  # 1 Bq in the source voxel
    result = monte_carlo_dose_rate(
        activity, medium, spacing, nuclide, n_photons=n_photons, n_electrons=n_electrons, n_batches=n_batches,
        seed=seed, line_electrons=line_electrons,
    )
    crop = slice(margin, margin + 2 * h + 1)
    return VoxelSValues(
        kernel=result.dose_rate[crop, crop, crop].double(),
        std=result.std[crop, crop, crop].double(),
        nuclide=emission_spectrum(nuclide).name,
        spacing_mm=spacing,
        material=material,
        density=float(medium.density[0]),
    )


def _fft_convolve(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'same'-size linear (zero-padded) 3D convolution by FFT, float64."""
    shape = [s + k - 1 for s, k in zip(image.shape, kernel.shape)]
    spectrum = torch.fft.rfftn(image.double(), shape) * torch.fft.rfftn(kernel.double().to(image.device), shape)
    full = torch.fft.irfftn(spectrum, shape)
    lo = [k // 2 for k in kernel.shape]
    return full[lo[0] : lo[0] + image.shape[0], lo[1] : lo[1] + image.shape[1], lo[2] : lo[2] + image.shape[2]]


def _check_kernel(kernel: VoxelSValues, spacing: tuple[float, float, float]) -> None:
    if any(abs(a - b) > 1e-3 * b for a, b in zip(kernel.spacing_mm, spacing)):
        raise InputError(
            f"the {kernel.nuclide} kernel has voxels of {kernel.spacing_mm} mm but the activity {spacing} mm; "
            "compute the kernel at the image spacing (voxel_s_values(spacing_mm=...)) or resample the image."
        )
    if any(s % 2 == 0 for s in kernel.kernel.shape):
        raise InputError(f"kernel shape {tuple(kernel.kernel.shape)} must be odd along each axis.")


def vsv_dose_rate(
    activity: torch.Tensor,
    kernel: VoxelSValues,
    spacing_mm: float | Sequence[float],
    density: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dose rate by voxel S-value convolution: D = (A x V) * S, optionally density-scaled.

    Args:
        activity: [X, Y, Z] activity concentration, Bq/mL.
        kernel: :func:`voxel_s_values` at the same voxel size.
        spacing_mm: voxel size of ``activity``, mm.
        density: [X, Y, Z] g/cm3 of each target voxel; when given, each voxel's dose rate is multiplied
            by ``kernel.density / density`` (density-scaled VSV).

    Returns:
        [X, Y, Z] dose rate, Gy/s (float32, clipped at 0 against FFT round-off), on ``activity``'s device.

    Raises:
        InputError: bad activity, spacing different from the kernel's, or density of another shape
            or not positive.
    """
    activity = check_activity(activity)
    spacing = check_spacing_mm(spacing_mm)
    _check_kernel(kernel, spacing)
    dose = _fft_convolve(activity * voxel_volume_mL(spacing), kernel.kernel).clamp_min(0)
    if density is not None:
        density = torch.as_tensor(density, device=activity.device)
        check_same_shape(activity, density, "activity", "density")
        if not (torch.isfinite(density).all() and (density > 0).all()):
            raise InputError("density must be finite and positive (g/cm3).")
        dose = dose * (kernel.density / density.double())
    return dose.float()


def density_scaled_vsv_dose_rate(
    activity: torch.Tensor,
    ct: torch.Tensor,
    kernel: VoxelSValues,
    spacing_mm: float | Sequence[float],
    kvp: int = 120,
) -> torch.Tensor:
    """Density-scaled VSV: :func:`vsv_dose_rate` with the density of
    :func:`common.physics.hu_to_material` (the Monte Carlo's own conversion) of a CT in HU.

    Args:
        activity: [X, Y, Z] Bq/mL.
        ct: [X, Y, Z] CT in HU, same grid.
        kernel: water (or other) VSV kernel at the same voxel size.
        spacing_mm: voxel size, mm.
        kvp: CT tube voltage.

    Returns:
        [X, Y, Z] dose rate, Gy/s.
    """
    ct = torch.as_tensor(ct)
    check_same_shape(torch.as_tensor(activity), ct, "activity", "CT")
    if not torch.isfinite(ct.float()).all():
        raise InputError("the CT contains NaN or Inf.")
    return vsv_dose_rate(activity, kernel, spacing_mm, hu_to_material(ct, kvp).density)


def local_deposition_dose_rate(
    activity: torch.Tensor,
    ct: torch.Tensor,
    spacing_mm: float | Sequence[float],
    nuclide: str = "Lu-177",
    include_photons: bool = False,
    kvp: int = 120,
    line_electrons: bool = True,
) -> torch.Tensor:
    """Dose rate if every electron (and optionally every photon) deposited its energy in its own voxel.

    D = C x E_local / rho, with C in Bq/mL, E_local the electron energy per decay (beta, conversion,
    Auger; plus all photon energy with ``include_photons``) and rho from
    :func:`common.physics.hu_to_material`.

    Args:
        activity: [X, Y, Z] Bq/mL.
        ct: [X, Y, Z] CT in HU, same grid.
        spacing_mm: voxel size, mm (checked; the result does not depend on it).
        nuclide: ICRP-107 nuclide.
        include_photons: also deposit the photon energy locally.
        kvp: CT tube voltage.
        line_electrons: include conversion and Auger electrons.

    Returns:
        [X, Y, Z] dose rate, Gy/s (float32).
    """
    activity = check_activity(activity)
    check_spacing_mm(spacing_mm)
    ct = torch.as_tensor(ct, device=activity.device)
    check_same_shape(activity, ct, "activity", "CT")
    if not torch.isfinite(ct.float()).all():
        raise InputError("the CT contains NaN or Inf.")
    spec = emission_spectrum(nuclide, line_electrons=line_electrons)
    energy_MeV = spec.electron_MeV_per_decay + spec.local_photon_MeV
    if include_photons:
        energy_MeV += spec.transported_photon_MeV + spec.escaping_photon_MeV
    density = hu_to_material(ct, kvp).density.double()
    # Bq/mL x J / (g/cm3 -> kg/mL): 1 g/cm3 = 1e-3 kg/mL
    return (activity.double() * energy_MeV * MEV_TO_J / (density * 1e-3)).float()
