"""Electron (beta, conversion and Auger) energy deposition around a point source in water: the
density-scaled electron dose kernel of :mod:`common.dosimetry.montecarlo`.

The kernel comes from physics computed here, offline, by a small condensed-history Monte Carlo:

- continuous slowing down with the Bethe collision stopping power for electrons (Rohrlich-Carlson
  F-minus term; positrons with F-plus), water I = 75 eV, Z/A = 0.55509 (ICRU Report 37, the values
  of NIST ESTAR); at 100 keV it gives 4.115 MeV cm2/g. Neglected: the density effect (< 1% below
  1 MeV in water), radiative losses (bremsstrahlung yield < 1% below 1 MeV; its energy is counted as
  deposited along the track), energy-loss straggling and delta-ray transport;
- multiple scattering by the first transport mean free path lambda_1 of screened Rutherford
  (Wentzel) scattering with Moliere's screening parameter, Z(Z+1) for scattering on atomic electrons;
  the deflection over a step s is drawn from a screened-Rutherford-shaped distribution whose mean
  (1 - cos theta) equals the exact 1 - exp(-s / lambda_1) (Goudsmit-Saunderson's first moment);
- steps lose 3% of the energy; the deflection happens at a uniformly drawn point of the step
  ("random hinge", Kawrakow & Bielajew 1998), where the step's energy loss is scored; electrons
  below 10 keV (CSDA range 2.5 um) end on their last step.

The result, :class:`ElectronKernel`, is the fraction of a nuclide's electron energy deposited
within a radius r of a point source in water (r in g/cm2, i.e. cm of unit-density water). Sampling
a radius from it and walking that many g/cm2 along a straight ray through the voxel densities is how
the Monte Carlo deposits electron energy in heterogeneous media (path-length scaling by electron
density).

Units: energy keV (MeV where named), stopping power MeV cm2/g, range and radius g/cm2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from common.dosimetry.grid import LogGrid
from common.dosimetry.spectra import emission_spectrum

__all__ = [
    "ELECTRON_REST_KEV",
    "WATER_Z_OVER_A",
    "WATER_I_EV",
    "collision_stopping_power",
    "csda_range",
    "transport_mean_free_path",
    "ElectronKernel",
    "electron_point_kernel",
    "radial_energy_deposition",
    "rotate_directions",
]

ELECTRON_REST_KEV = 510.99895
#: Water (ICRU Report 37; NIST ESTAR): electrons per nucleon and mean excitation energy.
WATER_Z_OVER_A = 0.55509
WATER_I_EV = 75.0
# 2 pi r_e^2 m c^2 N_A, MeV cm2/mol
_BETHE_K = 0.153537
# Water molecule for multiple scattering: (Z, atoms per molecule); molar mass g/mol.
_WATER_ATOMS = ((1, 2), (8, 1))
_WATER_MOLAR_MASS = 18.0153
_AVOGADRO = 6.02214076e23
_FINE_STRUCTURE = 1 / 137.035999
_HBAR_C_MEV_FM = 197.3269804
_BOHR_FM = 52917.72109
_E2_MEV_CM = 1.439964548e-13  # e^2 = r_e m c^2

_TABLE = LogGrid(1.0, 5000.0, 2000)  # keV
_CUTOFF_KEV = 10.0
_STEP_LOSS = 0.03


def collision_stopping_power(energy_keV: torch.Tensor, positron: bool = False) -> torch.Tensor:
    """Bethe mass collision stopping power of water for electrons (or positrons), MeV cm2/g.

    Args:
        energy_keV: kinetic energy [N], keV (> 0; the formula is used down to 1 keV).
        positron: use the positron F-plus term.

    Returns:
        [N] stopping power in MeV cm2/g, same dtype and device.
    """
    tau = torch.as_tensor(energy_keV, dtype=torch.float64) / ELECTRON_REST_KEV
    beta2 = 1.0 - 1.0 / (1.0 + tau) ** 2
    if positron:
        y = 1.0 / (tau + 2.0)
        f = 2 * math.log(2) - beta2 / 12 * (23 + 14 * y + 10 * y**2 + 4 * y**3)
    else:
        f = 1 - beta2 + (tau**2 / 8 - (2 * tau + 1) * math.log(2)) / (tau + 1) ** 2
    i_rel = WATER_I_EV * 1e-3 / ELECTRON_REST_KEV
    log_term = torch.log(tau**2 * (tau + 2) / (2 * i_rel**2))
    out = _BETHE_K * WATER_Z_OVER_A / beta2 * (log_term + f)
    return out.to(energy_keV.dtype) if torch.is_tensor(energy_keV) and energy_keV.is_floating_point() else out


@lru_cache(maxsize=2)
def _range_table(positron: bool) -> torch.Tensor:
    e = _TABLE.nodes()
    inv_s = 1e-3 / collision_stopping_power(e, positron)  # g/cm2 per keV
    # CSDA range below the first node: E / S(E) (S rises towards low energy, so this is an upper bound
    # of a 1 keV electron's 0.005 mg/cm2, negligible against the 10 keV cutoff's 0.25 mg/cm2)
    r0 = e[0] * inv_s[0]
    de = torch.diff(e)
    return torch.cat([r0.view(1), r0 + torch.cumsum(0.5 * (inv_s[1:] + inv_s[:-1]) * de, 0)])


def csda_range(energy_keV: torch.Tensor, positron: bool = False) -> torch.Tensor:
    """CSDA range in water (integral of 1 / stopping power), g/cm2, for energies 1..5000 keV.

    Args:
        energy_keV: [N] kinetic energy, keV.
        positron: use the positron stopping power.

    Returns:
        [N] range in g/cm2 (float64).
    """
    e = torch.as_tensor(energy_keV, dtype=torch.float64)
    return _TABLE(_range_table(positron), e.clamp(_TABLE.e_min, _TABLE.e_max))


def transport_mean_free_path(energy_keV: torch.Tensor) -> torch.Tensor:
    """First transport mean free path lambda_1 of electrons in water, g/cm2.

    Screened Rutherford (Wentzel) elastic scattering on each atom, Z(Z+1) to include the atomic
    electrons, with Moliere's screening parameter
    eta = 1/4 (hbar / (p a))^2 (1.13 + 3.76 (alpha Z / beta)^2), a = 0.885 a_0 Z^(-1/3);
    sigma_1 = 2 pi Z(Z+1) (e^2 / (p v))^2 [ln(1 + 1/eta) - 1 / (1 + eta)].

    Args:
        energy_keV: [N] kinetic energy, keV.

    Returns:
        [N] lambda_1 in g/cm2 (float64).
    """
    t = torch.as_tensor(energy_keV, dtype=torch.float64) * 1e-3  # MeV
    mc2 = ELECTRON_REST_KEV * 1e-3
    pc = torch.sqrt(t * (t + 2 * mc2))
    beta = pc / (t + mc2)
    pv = pc * beta
    sigma1 = torch.zeros_like(t)
    for z, n_atoms in _WATER_ATOMS:
        a = 0.885 * _BOHR_FM * z ** (-1 / 3)
        eta = 0.25 * (_HBAR_C_MEV_FM / (pc * a)) ** 2 * (1.13 + 3.76 * (_FINE_STRUCTURE * z / beta) ** 2)
        sigma1 += n_atoms * 2 * math.pi * z * (z + 1) * (_E2_MEV_CM / pv) ** 2 * (
            torch.log1p(1 / eta) - 1 / (1 + eta)
        )
    return _WATER_MOLAR_MASS / (_AVOGADRO * sigma1)


_MEAN_CHI = LogGrid(1e-9, 0.999, 1500)  # grid of the mean of 1 - cos(theta) over a step


@lru_cache(maxsize=1)
def _screening_table() -> torch.Tensor:
    """log A on the :data:`_MEAN_CHI` grid, where p(chi) ~ 1 / (chi + A)^2 on [0, 2] has mean chi."""
    a = np.logspace(-14, 7, 20001)
    mean = a * (a + 2) / 2 * (np.log1p(2 / a) - 2 / (2 + a))
    target = _MEAN_CHI.nodes().numpy()
    return torch.from_numpy(np.interp(np.log(target), np.log(mean), np.log(a)))


@lru_cache(maxsize=1)
def _lambda1_table() -> torch.Tensor:
    return transport_mean_free_path(_TABLE.nodes())


def _sample_deflection(mean_chi: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """cos(theta) from a screened-Rutherford-shaped law with the given mean 1 - cos(theta)."""
    m = mean_chi.clamp(_MEAN_CHI.e_min, _MEAN_CHI.e_max)
    a = torch.exp(_MEAN_CHI(_screening_table(), m))
    chi = 2 * a * u / (a + 2 - 2 * u)  # inverse CDF
    return (1 - chi).clamp(-1.0, 1.0)


def rotate_directions(direction: torch.Tensor, cos_t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Turn unit vectors [N, 3] by polar angle acos(cos_t) [N] and azimuth phi [N] (radians) about
    themselves; returns unit vectors [N, 3] of the same dtype."""
    ux, uy, uz = direction.unbind(1)
    sin_t = torch.sqrt((1 - cos_t**2).clamp_min(0))
    cp, sp = torch.cos(phi), torch.sin(phi)
    perp = torch.sqrt((1 - uz**2).clamp_min(1e-12))
    general = torch.stack(
        [
            sin_t * (ux * uz * cp - uy * sp) / perp + ux * cos_t,
            sin_t * (uy * uz * cp + ux * sp) / perp + uy * cos_t,
            -sin_t * cp * perp + uz * cos_t,
        ],
        1,
    )
    polar = torch.stack([sin_t * cp, sin_t * sp, torch.where(uz < 0, -cos_t, cos_t)], 1)
    out = torch.where((uz.abs() > 0.99999).unsqueeze(1), polar, general)
    return out / out.norm(dim=1, keepdim=True)


def radial_energy_deposition(
    energy_keV: torch.Tensor,
    r_max: float,
    n_shells: int,
    positron: bool = False,
    generator: torch.Generator | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Energy deposited in spherical shells around a point source of electrons in water.

    Condensed-history transport as in the module docstring; vectorized over electrons.

    Args:
        energy_keV: [N] initial kinetic energies, keV (each electron starts at the origin).
        r_max: outer radius of the last shell, g/cm2; deposits beyond go to the last shell.
        n_shells: number B of equal-width shells from 0 to ``r_max``.
        positron: positron stopping power.
        generator: torch random generator (CPU).
        weight: [N] multiplier of each electron's deposits (default 1).

    Returns:
        [B] energy (keV x weight, float64) deposited in each shell, summed over the electrons.
    """
    e = torch.as_tensor(energy_keV, dtype=torch.float64).clone()
    n = e.numel()
    w = torch.ones_like(e) if weight is None else torch.as_tensor(weight, dtype=torch.float64).clone()
    pos = torch.zeros(n, 3, dtype=torch.float64)
    direction = torch.zeros(n, 3, dtype=torch.float64)
    direction[:, 2] = 1.0
    tally = torch.zeros(n_shells, dtype=torch.float64)
    range_table, lambda_table = _range_table(positron), _lambda1_table()
    residual = _TABLE(range_table, e.clamp(_TABLE.e_min, _TABLE.e_max))  # CSDA range left, g/cm2

    def rand(k: int) -> torch.Tensor:
        return torch.rand(k, dtype=torch.float64, generator=generator)

    while e.numel():
        e_end = e * (1 - _STEP_LOSS)
        last = e_end < _CUTOFF_KEV
        e_end = torch.where(last, torch.zeros_like(e_end), e_end)
        residual_end = torch.where(last, 0.0, _TABLE(range_table, e_end.clamp_min(_TABLE.e_min)))
        step = residual - residual_end
        e_mid = (0.5 * (e + e_end)).clamp_min(_TABLE.e_min)
        hinge = rand(len(e)).unsqueeze(1)
        pos = pos + hinge * step.unsqueeze(1) * direction
        shell = (pos.norm(dim=1) * (n_shells / r_max)).long().clamp_max(n_shells - 1)
        tally.index_add_(0, shell, (e - e_end) * w)
        mean_chi = -torch.expm1(-step / _TABLE(lambda_table, e_mid))
        direction = rotate_directions(direction, _sample_deflection(mean_chi, rand(len(e))), 2 * math.pi * rand(len(e)))
        pos = pos + (1 - hinge) * step.unsqueeze(1) * direction
        alive = ~last
        e, residual, pos, direction, w = e_end[alive], residual_end[alive], pos[alive], direction[alive], w[alive]
    return tally


@dataclass(frozen=True)
class ElectronKernel:
    """Radial energy deposition of a nuclide's electrons around a point source in water.

    Attributes:
        nuclide: ICRP-107 name.
        r_edges: [B + 1] shell edges, g/cm2 (cm of unit-density water), from 0.
        cdf: [B + 1] fraction of the electron energy deposited within each edge (0 .. 1).
        energy_MeV_per_decay: electron energy per decay the kernel distributes (beta + conversion +
            Auger), MeV.
        csda_range_max: CSDA range of the most energetic electron, g/cm2.
    """

    nuclide: str
    r_edges: torch.Tensor
    cdf: torch.Tensor
    energy_MeV_per_decay: float
    csda_range_max: float

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> ElectronKernel:
        """The same kernel with its tables on ``device``."""
        return ElectronKernel(
            self.nuclide, self.r_edges.to(device, dtype), self.cdf.to(device, dtype), self.energy_MeV_per_decay,
            self.csda_range_max,
        )

    def sample_radius(self, u: torch.Tensor) -> torch.Tensor:
        """Radii (g/cm2) of energy deposits for uniform deviates ``u`` [N] in [0, 1): inverse CDF,
        linear within a shell. Each radius carries an equal share of the electron energy."""
        cdf = self.cdf
        i = torch.searchsorted(cdf, u.to(cdf.dtype), right=True).clamp(1, len(cdf) - 1)
        lo, hi = cdf[i - 1], cdf[i]
        t = ((u - lo) / (hi - lo).clamp_min(1e-30)).clamp(0, 1)
        return self.r_edges[i - 1] + t * (self.r_edges[i] - self.r_edges[i - 1])

    def fraction_within(self, r: torch.Tensor | float) -> torch.Tensor:
        """Fraction of the electron energy deposited within radius ``r`` (g/cm2)."""
        r = torch.as_tensor(r, dtype=self.cdf.dtype, device=self.cdf.device)
        edges, cdf = self.r_edges, self.cdf
        i = torch.searchsorted(edges, r.clamp(0, float(edges[-1])), right=True).clamp(1, len(edges) - 1)
        t = (r - edges[i - 1]) / (edges[i] - edges[i - 1])
        return (cdf[i - 1] + t.clamp(0, 1) * (cdf[i] - cdf[i - 1])).clamp(0, 1)


def _energy_weighted_sample(spec, n: int, generator: torch.Generator) -> torch.Tensor:
    """Initial energies (keV) drawn in proportion to energy x yield over the beta continuum and the
    conversion/Auger lines, so every simulated electron carries an equal share of the energy."""
    parts, weights = [], []
    if spec.beta_yield > 0:
        e = np.asarray(spec.beta_MeV)
        dens = e * np.asarray(spec.beta_density)  # energy-weighted density
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(e))])
        parts.append(("beta", e, cdf))
        weights.append(cdf[-1])
    lines_e = np.asarray(spec.line_electron_keV) * 1e-3
    lines_w = lines_e * np.asarray(spec.line_electron_yield)
    if lines_w.sum() > 0:
        parts.append(("lines", lines_e, lines_w))
        weights.append(lines_w.sum())
    weights = torch.tensor(weights, dtype=torch.float64)
    which = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=generator)
    out = torch.empty(n, dtype=torch.float64)
    for k, (kind, e, w) in enumerate(parts):
        sel = which == k
        m = int(sel.sum())
        if not m:
            continue
        if kind == "beta":
            # piecewise-linear CDF inversion on the tabulated grid
            u = torch.rand(m, dtype=torch.float64, generator=generator) * float(w[-1])
            out[sel] = torch.from_numpy(np.interp(u.numpy(), w, e))
        else:
            idx = torch.multinomial(torch.from_numpy(w / w.sum()), m, replacement=True, generator=generator)
            out[sel] = torch.from_numpy(e)[idx]
    return out * 1e3


@lru_cache(maxsize=16)
def electron_point_kernel(
    nuclide: str, line_electrons: bool = True, n_electrons: int = 100_000, n_shells: int = 2000, seed: int = 0
) -> ElectronKernel:
    """The electron energy-deposition kernel of a nuclide in water (betas, conversion and Auger
    electrons of ICRP-107), computed by :func:`radial_energy_deposition`; cached per arguments.

    About 1-2 s on one CPU thread for Lu-177 with the defaults; deterministic for a seed.

    Args:
        nuclide: e.g. "Lu-177", "F-18", "Y-90".
        line_electrons: include conversion and Auger electrons (see
            :func:`~common.dosimetry.spectra.emission_spectrum`).
        n_electrons: simulated electrons (each an equal share of the electron energy).
        n_shells: radial shells from 0 to the CSDA range of the most energetic electron.
        seed: random seed.

    Returns:
        :class:`ElectronKernel` on the CPU (float64); ``.to(device)`` for the engine.
    """
    spec = emission_spectrum(nuclide, line_electrons=line_electrons)
    total = spec.electron_MeV_per_decay
    if total <= 0:  # photon-only emitter: a kernel that deposits nothing
        edges = torch.tensor([0.0, 1e-6], dtype=torch.float64)
        return ElectronKernel(spec.name, edges, torch.tensor([0.0, 1.0], dtype=torch.float64), 0.0, 1e-6)
    e_max = max([spec.beta_MeV[-1] * 1e3 if spec.beta_yield > 0 else 0.0, *spec.line_electron_keV])
    positron = spec.positron_yield > 0.5 * spec.beta_yield > 0
    r_max = float(csda_range(torch.tensor([e_max]), positron)[0]) * 1.0001
    edges = torch.linspace(0.0, r_max, n_shells + 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    energies = _energy_weighted_sample(spec, n_electrons, g)
    tally = radial_energy_deposition(energies, r_max, n_shells, positron, g, weight=1.0 / energies)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(tally, 0)])
    return ElectronKernel(spec.name, edges, cdf / cdf[-1], total, r_max)
