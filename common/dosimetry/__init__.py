"""Internal dosimetry: a reference Monte Carlo dose rate for voxelized heterogeneous media, voxel
S-value kernels computed with it, and the convolution baselines (VSV in water, density-scaled VSV,
local energy deposition). One concern per module:

- :mod:`~common.dosimetry.spectra`: what a decay emits (ICRP-107 photon lines, beta spectrum,
  conversion and Auger electrons), split into transported and locally absorbed parts;
- :mod:`~common.dosimetry.electrons`: electron stopping power, range and multiple scattering in
  water, and the electron point kernel they give;
- :mod:`~common.dosimetry.medium`: the voxelized medium from CT (through
  :func:`common.physics.hu_to_material`, the one HU -> material and density conversion) and its
  photon interaction tables (xraydb);
- :mod:`~common.dosimetry.montecarlo`: the engine: Woodcock photon tracking with photoelectric
  absorption and Klein-Nishina Compton scattering, density-scaled electron kernel, dose rate in Gy/s
  with its statistical uncertainty;
- :mod:`~common.dosimetry.kernels`: voxel S-values and convolution dosimetry;
- :mod:`~common.dosimetry.inputs` (input checks, units) and :mod:`~common.dosimetry.grid`
  (log-energy tables).

Units: activity Bq/mL, spacing mm, energy keV (MeV where named), density g/cm3, dose rate Gy/s.
Everything runs on the device of its input tensors.
"""

from common.dosimetry.electrons import ElectronKernel, electron_point_kernel
from common.dosimetry.kernels import (
    VoxelSValues,
    density_scaled_vsv_dose_rate,
    local_deposition_dose_rate,
    voxel_s_values,
    vsv_dose_rate,
)
from common.dosimetry.medium import Medium, PhotonTables
from common.dosimetry.montecarlo import DoseRateResult, monte_carlo_dose_rate, transport_photons
from common.dosimetry.spectra import EmissionSpectrum, emission_spectrum

__all__ = [
    "ElectronKernel",
    "electron_point_kernel",
    "VoxelSValues",
    "voxel_s_values",
    "vsv_dose_rate",
    "density_scaled_vsv_dose_rate",
    "local_deposition_dose_rate",
    "Medium",
    "PhotonTables",
    "DoseRateResult",
    "monte_carlo_dose_rate",
    "transport_photons",
    "EmissionSpectrum",
    "emission_spectrum",
]
