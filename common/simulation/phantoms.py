"""Procedural, seeded 3D anatomy for nuclear-medicine image generation.

Two generators build one subject each from a seed:

- :func:`make_torso_phantom`: neck base to upper thighs (default 128 x 128 x 96 voxels of 4 mm, a
  512 x 512 x 384 mm field of view): body outline, subcutaneous and visceral fat, muscle,
  lungs with vessel and density texture, airways, heart (myocardium and blood pool), aorta,
  liver, spleen, kidneys, bladder, bowel with gas, brown-fat depots, spine (vertebral bodies with
  cortical shell and trabecular core, posterior elements), ribs, sternum, clavicles, scapulae,
  pelvis, femora, and arms (humerus, radius and ulna in muscle and fat) unless they are raised.
- :func:`make_head_phantom`: head and upper neck (default 128^3 voxels of 2 mm): scalp, skull
  (outer and inner tables with diploe), skull base, grey and white matter with folded cortex,
  ventricles, cerebellum, brainstem, eyes, paranasal sinuses and mastoid air cells, nasal cavity,
  pharynx, maxilla, mandible, cervical spine, salivary glands.

Every organ is a smooth ellipsoid, superellipse or tube whose size, position and rotation are
perturbed per subject, and whose surface is bent by a smooth random field. Lesions (random number
and place) are spheroids clipped to their host organ; each has its own label id >= 100.

Torso families
--------------
A torso subject is drawn from a family of subjects, a :class:`TorsoVariety` of sampling ranges:
``"training"`` (:data:`TRAINING_VARIETY`) for every training and validation set, and ``"shifted"``
(:data:`SHIFTED_VARIETY`), an out-of-distribution family that no training uses, to test how a
network copes with torsos made differently. Each shifted range lies outside the training range
(both sides where both make sense; one interval of a union is picked with equal probability, then
a value uniformly inside it), and the shifted family draws combinations training never draws
(arms always down, myocardium always at an extreme, brown fat always active). Every sampled
value is recorded in ``Phantom.params`` under the name in the table's first column.

The ranges of both families are in the one table of :mod:`common.simulation` (package docstring).

How the parameters act:

- Body size: anatomy is defined for an adult in "anatomy millimetres"; the whole subject is drawn
  at ``stature_scale`` = (min(weight, 55 kg) / 55 kg)^0.4 x ``height_scale`` (a 20 kg child at
  about 2/3 of adult size, organs, bones and lengths included), the lateral frame grows as
  (weight / 75 kg)^0.12 above 55 kg. Subcutaneous fat ``fat_mm`` (image mm, thicker at the
  abdomen and hips) is 2 + 1.1 x (BMI - 17) x ``adiposity`` for a height of 1.72 m x stature,
  clipped to 2.5-55 mm; ``visceral_fat_fraction`` (of the abdominal cavity) grows with weight x
  adiposity up to 0.65. ``trunk_width_mm`` and ``trunk_depth_mm`` record the result at the navel.
  Heights (``lung_apex_mm``, ``diaphragm_mm``) are anatomy millimetres above the subject's origin
  (about the lower chest), i.e. image millimetres / ``stature_scale``.
- Arms (``arms_mode``): "separate" arms hang beside the trunk at ``arm_gap_mm`` of air (measured
  on the image from the trunk's outline in the rows of the arm, so it holds after voxelisation),
  "touching" arms rest against it (``arm_gap_mm`` 0), "raised" arms lie outside the field of view
  (``arm_gap_mm`` None). Each arm has skin line and subcutaneous fat, muscle, a humerus and a
  radius and ulna (cortical shell, marrow); it is clipped where it leaves the field of view
  (large subjects). ``arm_right_x_mm`` / ``arm_left_x_mm`` record the shoulders' lateral
  positions and ``arm_y_mm`` the arms' AP position.
- Lungs: ``lung_scale`` scales the ribcage inside the chest wall (a smaller ribcage sits in a
  thicker wall, capped 6 mm inside the muscle outline), ``lung_apex_mm`` is the apex height, the
  lung bases follow the diaphragm domes at ``diaphragm_mm`` (right) and that minus
  ``diaphragm_lr_mm`` (left; recorded also as ``z_diaphragm_right`` / ``z_diaphragm_left``). Heart,
  liver, spleen and kidneys move with the domes.
- CT: per-tissue values are drawn from :data:`HU_RANGES` (the centre), then ``soft_hu_offset``
  is added to fat, muscle, brown fat and every soft organ, and cortical and trabecular bone are
  multiplied by ``bone_hu_scale`` (training: cortical about 900-1600 HU, trabecular 180-376 HU). The
  final values are in ``params["hu"]``.
- FDG: lung, myocardium, bladder and (when ``brown_fat``) brown fat take the SUVs of the family;
  the bowel (abdominal soft tissue) carries a patchy uptake ``bowel_uptake`` x that of the other
  soft tissue (mediastinum, cord, discs), so the configured soft-tissue SUV is the table's value
  x (0.6 x bowel_uptake + 0.4), 0.6 being the bowel's nominal share of soft-tissue voxels. Brown
  fat is its own label (``"brown_fat"``: supraclavicular and axillary pads, paravertebral strips)
  in every torso; inactive it takes fat-like uptake. Other tracers use :data:`SUV_RANGES`.
- Lesions: torso lesions are placed in the trunk (not in the arms); a ``cortical_bone`` lesion is
  centred in cortex and spreads into the adjacent trabecular bone.

``make_torso_phantom(..., arms=True/False)`` forces arms down (separate or touching) or raised;
every other value of the subject is the same whatever ``arms`` says. Custom families:
``dataclasses.replace(TRAINING_VARIETY, name="mine", weight_kg=(60, 90))``.

Per subject the generator returns (all arrays [X, Y, Z], X towards the subject's right,
Y anterior, Z superior, i.e. RAS; float images float32):

- ``labels`` (int16) with the ids of :data:`LABELS` (stable; datasets and metrics depend on them),
- ``ct_hu``: CT in Hounsfield units with CT-like noise (std 10-20 HU, sampled per subject),
- ``mr_t1``: a T1-weighted-like image (arbitrary units): fat bright, muscle dark grey, liver
  brighter than spleen, cortical bone, lung and air all near zero, smooth multiplicative bias
  field and Rician noise; so MR intensity holds no direct information on HU,
- ``activity``: tracer concentration in Bq/mL for ``"FDG"``, ``"Tc99m-agent"`` (a
  methylene-diphosphonate-like bone agent) and ``"Lu177-agent"`` (a PSMA-617-like
  radioligand), written as ``concentration = SUV x injected_Bq / weight_g`` and decay-corrected
  to injection time (the SUV convention of DESIGN.md 3). Multiply by
  ``common.physics.decay_factor(uptake_time_s, half_life_s)`` for the activity present at scan.

Activity convention (tested): the mean concentration over an organ's voxels (lesion voxels are
labelled apart and therefore excluded) equals ``organ_uptake[tracer][organ]`` exactly; inside an
organ the concentration carries a smooth texture (lung: proportional to local density; bowel:
patchy, ``bowel_uptake`` x the rest of the soft tissue; active brown fat: patchy) whose mean over
the organ is one. Lesion concentrations are uniform.

Speed: a 128 x 128 x 96 torso or a 128^3 head takes about 0.6 s on one core; everything is
vectorised numpy. Every random number comes from ``numpy.random.default_rng(seed)``; arrays whose
size depends on the grid are drawn from child generators, so one seed gives the same subject
(every value in ``params`` above, organ sizes, positions, uptakes) at any shape and spacing, only
textures and noise differ (and the arms' exact placement, which keeps the gap on the voxel grid).
Geometry is evaluated in float64 so label maps do not depend on SIMD rounding.

Visual check: ``python -m common.simulation.phantoms OUT_DIR [n]`` writes montages of n subjects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "LABELS",
    "LABEL_NAMES",
    "LESION_ID_START",
    "TRACERS",
    "TORSO_LABELS",
    "HEAD_LABELS",
    "ARMS_MODES",
    "TorsoVariety",
    "TRAINING_VARIETY",
    "SHIFTED_VARIETY",
    "VARIETIES",
    "Phantom",
    "make_torso_phantom",
    "make_head_phantom",
]

#: Stable label ids shared by torso and head phantoms (0 = air outside the body).
LABELS: dict[str, int] = {
    "background": 0,
    "fat": 1,
    "muscle": 2,
    "soft_tissue": 3,  # bowel, mediastinum, spinal cord, mucosa: generic water-like tissue
    "lung": 4,
    "airway": 5,  # trachea, bronchi, pharynx (air inside the body)
    "myocardium": 6,
    "blood_pool": 7,  # cardiac chambers and aorta
    "liver": 8,
    "spleen": 9,
    "kidney_right": 10,
    "kidney_left": 11,
    "bladder": 12,
    "cortical_bone": 13,
    "trabecular_bone": 14,
    "bowel_gas": 15,
    "brown_fat": 16,  # brown-adipose depots (supraclavicular, axillary, paravertebral); FDG-hot when active
    "grey_matter": 20,  # cortex and deep nuclei
    "white_matter": 21,
    "csf": 22,
    "cerebellum": 23,
    "brainstem": 24,
    "eye": 25,
    "sinus": 26,  # paranasal sinuses, nasal cavity, mastoid air cells (air)
    "salivary_gland": 27,
}
LABEL_NAMES: dict[int, str] = {v: k for k, v in LABELS.items()}
#: Lesion ``k`` (0-based) of a subject has label id ``LESION_ID_START + k``.
LESION_ID_START = 100
TRACERS = ("FDG", "Tc99m-agent", "Lu177-agent")

TORSO_LABELS = tuple(
    LABELS[n]
    for n in (
        "background", "fat", "muscle", "soft_tissue", "lung", "airway", "myocardium", "blood_pool", "liver",
        "spleen", "kidney_right", "kidney_left", "bladder", "cortical_bone", "trabecular_bone", "bowel_gas",
        "brown_fat",
    )
)  # fmt: skip
HEAD_LABELS = tuple(
    LABELS[n]
    for n in (
        "background", "fat", "muscle", "soft_tissue", "airway", "cortical_bone", "trabecular_bone", "grey_matter",
        "white_matter", "csf", "cerebellum", "brainstem", "eye", "sinus", "salivary_gland",
    )
)  # fmt: skip

# --------------------------------------------------------------------------------------------
# Tissue property tables: (low, high) ranges sampled uniformly per subject.
# --------------------------------------------------------------------------------------------

#: Mean CT number per tissue, HU (approximate non-contrast adult values: lung parenchyma about
#: -850, fat -120..-80, soft tissues 20..60, trabecular bone 200..400, cortical 1000..1500).
HU_RANGES: dict[str, tuple[float, float]] = {
    "background": (-1000.0, -1000.0),
    "fat": (-110.0, -90.0),
    "muscle": (42.0, 55.0),
    "soft_tissue": (28.0, 42.0),
    "lung": (-870.0, -830.0),  # parenchyma base; vessels and gravity gradient are added
    "airway": (-1000.0, -990.0),
    "myocardium": (38.0, 50.0),
    "blood_pool": (35.0, 48.0),
    "liver": (48.0, 58.0),
    "spleen": (42.0, 52.0),
    "kidney_right": (28.0, 38.0),
    "kidney_left": (28.0, 38.0),
    "bladder": (3.0, 15.0),
    "cortical_bone": (1100.0, 1400.0),
    "trabecular_bone": (220.0, 330.0),
    "bowel_gas": (-1000.0, -980.0),
    "brown_fat": (-90.0, -60.0),  # more water and cells than white fat
    "grey_matter": (36.0, 44.0),
    "white_matter": (24.0, 32.0),
    "csf": (2.0, 12.0),
    "cerebellum": (36.0, 44.0),
    "brainstem": (28.0, 36.0),
    "eye": (5.0, 15.0),
    "sinus": (-1000.0, -990.0),
    "salivary_gland": (20.0, 35.0),
}

#: T1-weighted signal per tissue (arbitrary units, fat = 1). Cortical bone, lung and air are
#: signal voids; trabecular bone carries fatty-marrow signal (intermediate), as in adult T1.
MR_T1: dict[str, float] = {
    "background": 0.0,
    "fat": 1.0,
    "muscle": 0.30,
    "soft_tissue": 0.40,
    "lung": 0.04,
    "airway": 0.0,
    "myocardium": 0.34,
    "blood_pool": 0.22,
    "liver": 0.55,
    "spleen": 0.40,
    "kidney_right": 0.42,
    "kidney_left": 0.42,
    "bladder": 0.08,
    "cortical_bone": 0.03,
    "trabecular_bone": 0.50,
    "bowel_gas": 0.0,
    "brown_fat": 0.75,
    "grey_matter": 0.45,
    "white_matter": 0.66,
    "csf": 0.08,
    "cerebellum": 0.48,
    "brainstem": 0.60,
    "eye": 0.10,
    "sinus": 0.0,
    "salivary_gland": 0.62,
}

#: Organ uptake as SUV ranges (approximate clinical literature values, sampled per subject).
#: FDG at ~60 min: liver 2-3, blood pool 1.5-2.2, myocardium 1-10 (fasting-dependent), brain grey
#: matter 7-10 (whole brain about 6-8), white matter 2.5-3.5, kidneys 2-4, bladder urine 10-50,
#: lung 0.4-0.7, fat ~0.3, muscle 0.6-1, marrow 1-2 (e.g. Boellaard et al. EJNMMI 2015 guideline
#: reference ranges; Zincirkeser et al. 2007; Wang et al. 2007 normal-organ SUVs).
#: Tc-99m MDP-like bone agent at ~3 h (quantitative SPECT/CT): normal trabecular bone (vertebrae)
#: SUV 3.5-7, cortical bone 2-4, kidneys 1-3, bladder urine 20-80, soft tissue 0.2-0.6
#: (e.g. Cachovan et al. EJNMMI Phys 2013; Kuji et al. Ann Nucl Med 2017).
#: Lu-177 PSMA-617-like at ~24 h (quantitative SPECT/CT): kidneys 3-8, salivary glands 4-10,
#: liver 0.4-1.2, spleen 0.6-2, bowel 0.2-0.6, bladder 0.5-5, blood 0.05-0.2, lesions 5-50
#: (e.g. Kabasakal et al. EJNMMI 2015; Violet et al. JNM 2019; Delker et al. EJNMMI 2016).
SUV_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "FDG": {
        "fat": (0.25, 0.40),
        "muscle": (0.6, 1.0),
        "soft_tissue": (1.0, 1.6),
        "lung": (0.4, 0.7),
        "airway": (0.0, 0.0),
        "myocardium": (1.0, 10.0),
        "blood_pool": (1.5, 2.2),
        "liver": (2.0, 3.0),
        "spleen": (1.6, 2.4),
        "kidney_right": (2.0, 4.0),
        "kidney_left": (2.0, 4.0),
        "bladder": (10.0, 50.0),
        "cortical_bone": (0.3, 0.6),
        "trabecular_bone": (1.0, 2.0),
        "bowel_gas": (0.0, 0.0),
        "brown_fat": (0.3, 0.6),  # inactive; active depots: TorsoVariety.brown_fat_suv
        "grey_matter": (7.0, 10.0),
        "white_matter": (2.5, 3.5),
        "csf": (0.1, 0.3),
        "cerebellum": (5.5, 7.5),
        "brainstem": (3.5, 5.0),
        "eye": (0.3, 0.6),
        "sinus": (0.0, 0.0),
        "salivary_gland": (1.5, 2.5),
    },
    "Tc99m-agent": {
        "fat": (0.1, 0.2),
        "muscle": (0.3, 0.5),
        "soft_tissue": (0.3, 0.6),
        "lung": (0.1, 0.2),
        "airway": (0.0, 0.0),
        "myocardium": (0.3, 0.5),
        "blood_pool": (0.4, 0.8),
        "liver": (0.3, 0.5),
        "spleen": (0.3, 0.5),
        "kidney_right": (1.0, 3.0),
        "kidney_left": (1.0, 3.0),
        "bladder": (20.0, 80.0),
        "cortical_bone": (2.0, 4.0),
        "trabecular_bone": (3.5, 7.0),
        "bowel_gas": (0.0, 0.0),
        "brown_fat": (0.1, 0.2),
        "grey_matter": (0.05, 0.15),
        "white_matter": (0.05, 0.15),
        "csf": (0.05, 0.15),
        "cerebellum": (0.05, 0.15),
        "brainstem": (0.05, 0.15),
        "eye": (0.1, 0.3),
        "sinus": (0.0, 0.0),
        "salivary_gland": (0.3, 0.6),
    },
    "Lu177-agent": {
        "fat": (0.02, 0.05),
        "muscle": (0.05, 0.12),
        "soft_tissue": (0.2, 0.6),
        "lung": (0.03, 0.08),
        "airway": (0.0, 0.0),
        "myocardium": (0.05, 0.15),
        "blood_pool": (0.05, 0.2),
        "liver": (0.4, 1.2),
        "spleen": (0.6, 2.0),
        "kidney_right": (3.0, 8.0),
        "kidney_left": (3.0, 8.0),
        "bladder": (0.5, 5.0),
        "cortical_bone": (0.05, 0.1),
        "trabecular_bone": (0.1, 0.3),
        "bowel_gas": (0.0, 0.0),
        "brown_fat": (0.02, 0.05),
        "grey_matter": (0.01, 0.04),
        "white_matter": (0.01, 0.04),
        "csf": (0.01, 0.04),
        "cerebellum": (0.01, 0.04),
        "brainstem": (0.01, 0.04),
        "eye": (0.02, 0.05),
        "sinus": (0.0, 0.0),
        "salivary_gland": (4.0, 10.0),
    },
}

#: Lesion SUV ranges per tracer (log-uniform): FDG-avid tumours SUV 3-20; PSMA-avid lesions 5-50.
#: For the bone agent, lesions in bone are 2-8 x normal bone (osteoblastic metastases), elsewhere
#: 0.8-1.5 x their host organ.
LESION_SUV = {"FDG": (3.0, 20.0), "Lu177-agent": (5.0, 50.0)}
TC_BONE_LESION_RATIO = (2.0, 8.0)
TC_SOFT_LESION_RATIO = (0.8, 1.5)

#: Typical administered activities (Bq) and uptake times (s).
#: FDG: 3-4 MBq/kg clipped to 150-450 MBq, scan at 50-70 min (EANM guideline 2015 range).
#: Tc-99m MDP: 550-925 MBq (15-25 mCi), scan at 2.5-4 h. Lu-177 PSMA: 7.4 GBq +-10 %, imaged at 20-28 h.
UPTAKE_TIME_S = {"FDG": (3000.0, 4200.0), "Tc99m-agent": (9000.0, 14400.0), "Lu177-agent": (72000.0, 100800.0)}

_N_LABEL_SLOTS = 256  # lookup tables sized for every base label and up to 156 lesions
_MAX_LESIONS = _N_LABEL_SLOTS - LESION_ID_START

# --------------------------------------------------------------------------------------------
# Torso families: sampling ranges of the subject-level parameters
# --------------------------------------------------------------------------------------------

#: Arm positions a torso subject can have (``Phantom.params["arms_mode"]``).
ARMS_MODES = ("separate", "touching", "raised")

Ranges = tuple[tuple[float, float], ...]
"""A union of closed intervals ``((lo, hi), ...)``; one interval is picked with equal probability,
then a value uniformly inside it (log-uniformly for the lesion uptakes). Every draw takes exactly one
number from the subject's random stream, however many intervals there are."""

#: Names of the range fields of :class:`TorsoVariety` (each a :data:`Ranges`).
_RANGE_FIELDS = (
    "weight_kg", "height_scale", "adiposity", "shoulder_scale", "waist_scale", "aspect_scale", "arm_gap_mm",
    "lung_scale", "lung_apex_mm", "diaphragm_mm", "diaphragm_lr_mm", "soft_hu_offset", "bone_hu_scale",
    "lung_suv", "myocardium_low_suv", "myocardium_high_suv", "bladder_fill", "bladder_suv", "bowel_uptake",
    "brown_fat_suv", "lesion_diameter_mm", "lesion_suv_fdg", "lesion_suv_lu177", "lesion_ratio_tc_bone",
    "lesion_ratio_tc_soft",
)  # fmt: skip
_LOG_FIELDS = ("lesion_suv_fdg", "lesion_suv_lu177")
_TORSO_LESION_HOST_NAMES = (
    "liver", "lung", "trabecular_bone", "cortical_bone", "soft_tissue", "spleen", "kidney_right", "kidney_left",
    "muscle", "fat",
)  # fmt: skip


@dataclass(frozen=True)
class TorsoVariety:
    """Sampling ranges of one family of torso subjects (the table in the module docstring).

    Every range field is a :data:`Ranges` (a plain ``(lo, hi)`` pair is accepted and stored as
    ``((lo, hi),)``); units are in the field's name or in the table. Lengths that place anatomy
    (``lung_apex_mm``, ``diaphragm_mm``, ``diaphragm_lr_mm``) are in the adult-size anatomy frame,
    which the subject's ``stature_scale`` shrinks or stretches; ``arm_gap_mm`` and
    ``lesion_diameter_mm`` are image millimetres. Build a variant with :func:`dataclasses.replace`,
    e.g. ``replace(TRAINING_VARIETY, name="no_arms", arms_probabilities=(0, 0, 1))``.

    Attributes:
        name: family name, stored as ``Phantom.params["family"]``.
        arms_probabilities: probabilities of the :data:`ARMS_MODES` (separate with an air gap,
            touching the trunk, raised out of the field of view); normalised, so they need not sum to 1.
        myocardium_high_probability: probability of a high (non-suppressed) FDG myocardium.
        brown_fat_probability: probability of FDG-active brown fat.
        lesion_hosts: ``((organ, probability), ...)`` where torso lesions are placed (normalised).
            ``"cortical_bone"`` lesions are centred in cortex and may spread into the adjacent
            trabecular bone; every other host clips its lesion to itself.
    """

    name: str = "custom"
    weight_kg: Ranges = ((20.0, 150.0),)
    height_scale: Ranges = ((0.94, 1.06),)
    adiposity: Ranges = ((0.7, 1.3),)
    shoulder_scale: Ranges = ((0.92, 1.12),)
    waist_scale: Ranges = ((0.88, 1.15),)
    aspect_scale: Ranges = ((0.82, 1.2),)
    arms_probabilities: tuple[float, float, float] = (0.4, 0.35, 0.25)
    arm_gap_mm: Ranges = ((10.0, 40.0),)
    lung_scale: Ranges = ((0.84, 1.03),)
    lung_apex_mm: Ranges = ((205.0, 240.0),)
    diaphragm_mm: Ranges = ((15.0, 65.0),)
    diaphragm_lr_mm: Ranges = ((0.0, 25.0),)
    soft_hu_offset: Ranges = ((-8.0, 8.0),)
    bone_hu_scale: Ranges = ((0.82, 1.14),)
    lung_suv: Ranges = ((0.35, 0.9),)
    myocardium_high_probability: float = 0.6
    myocardium_low_suv: Ranges = ((1.0, 2.0),)
    myocardium_high_suv: Ranges = ((4.0, 12.0),)
    bladder_fill: Ranges = ((0.0, 1.0),)
    bladder_suv: Ranges = ((5.0, 60.0),)
    bowel_uptake: Ranges = ((0.8, 3.0),)
    brown_fat_probability: float = 0.25
    brown_fat_suv: Ranges = ((3.0, 15.0),)
    lesion_diameter_mm: Ranges = ((4.0, 30.0),)
    lesion_suv_fdg: Ranges = ((3.0, 20.0),)
    lesion_suv_lu177: Ranges = ((5.0, 50.0),)
    lesion_ratio_tc_bone: Ranges = ((2.0, 8.0),)
    lesion_ratio_tc_soft: Ranges = ((0.8, 1.5),)
    lesion_hosts: tuple[tuple[str, float], ...] = (
        ("liver", 0.22), ("lung", 0.18), ("trabecular_bone", 0.14), ("cortical_bone", 0.05), ("soft_tissue", 0.14),
        ("spleen", 0.05), ("kidney_right", 0.04), ("kidney_left", 0.04), ("muscle", 0.08), ("fat", 0.06),
    )  # fmt: skip

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TorsoVariety.name must be a non-empty str, got {self.name!r}")
        for f in _RANGE_FIELDS:
            object.__setattr__(self, f, _as_ranges(f, getattr(self, f), positive=f in _LOG_FIELDS))
        for f in ("myocardium_high_probability", "brown_fat_probability"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
                raise ValueError(f"TorsoVariety.{f} must be a probability in [0, 1], got {v!r}")
        p = tuple(float(v) for v in self.arms_probabilities)
        if len(p) != len(ARMS_MODES) or min(p) < 0 or sum(p) <= 0 or not all(math.isfinite(v) for v in p):
            raise ValueError(f"TorsoVariety.arms_probabilities must be 3 non-negative numbers {ARMS_MODES} with a positive sum, got {self.arms_probabilities!r}")
        object.__setattr__(self, "arms_probabilities", p)
        hosts = tuple((str(h), float(w)) for h, w in self.lesion_hosts)
        bad = [h for h, w in hosts if h not in _TORSO_LESION_HOST_NAMES or not (w >= 0)]
        if bad or not hosts or sum(w for _, w in hosts) <= 0:
            raise ValueError(f"TorsoVariety.lesion_hosts must weight organs of {_TORSO_LESION_HOST_NAMES} with a positive sum, got {self.lesion_hosts!r}")
        object.__setattr__(self, "lesion_hosts", hosts)


def _as_ranges(name: str, value, positive: bool = False) -> Ranges:
    try:
        if len(value) == 2 and all(isinstance(v, (int, float, np.integer, np.floating)) for v in value):
            value = (value,)
        out = tuple((float(lo), float(hi)) for lo, hi in value)
    except (TypeError, ValueError):
        raise ValueError(f"TorsoVariety.{name} must be (lo, hi) or a tuple of (lo, hi) intervals, got {value!r}") from None
    if not out or not all(math.isfinite(lo) and math.isfinite(hi) and lo <= hi and (lo > 0 or not positive) for lo, hi in out):
        raise ValueError(f"TorsoVariety.{name} needs finite intervals with lo <= hi{' > 0' if positive else ''}, got {value!r}")
    return out


#: The family every shipped training and validation set draws from.
TRAINING_VARIETY = TorsoVariety(name="training")

#: Out-of-distribution test family: every range lies beyond the training range (on both sides where
#: both make sense), and combinations training never draws (arms always down, never raised; the
#: myocardium always at an extreme; brown fat always active). No training uses it.
SHIFTED_VARIETY = TorsoVariety(
    name="shifted",
    weight_kg=((15.0, 20.0), (150.0, 190.0)),
    height_scale=((0.88, 0.94), (1.06, 1.12)),
    adiposity=((0.4, 0.7), (1.3, 1.8)),
    shoulder_scale=((0.82, 0.92), (1.12, 1.22)),
    waist_scale=((0.78, 0.88), (1.15, 1.28)),
    aspect_scale=((0.72, 0.82), (1.2, 1.4)),
    arms_probabilities=(0.5, 0.5, 0.0),
    arm_gap_mm=((40.0, 80.0),),
    lung_scale=((0.7, 0.84),),
    lung_apex_mm=((185.0, 205.0), (240.0, 255.0)),
    diaphragm_mm=((-5.0, 15.0), (65.0, 85.0)),
    diaphragm_lr_mm=((-20.0, 0.0), (25.0, 40.0)),
    soft_hu_offset=((-20.0, -8.0), (8.0, 20.0)),
    bone_hu_scale=((0.68, 0.82), (1.14, 1.35)),
    lung_suv=((0.2, 0.35), (0.9, 1.8)),
    myocardium_high_probability=0.5,
    myocardium_low_suv=((0.5, 1.0),),
    myocardium_high_suv=((12.0, 20.0),),
    bladder_fill=((1.0, 1.4),),
    bladder_suv=((60.0, 150.0),),
    bowel_uptake=((3.0, 5.0),),
    brown_fat_probability=1.0,
    brown_fat_suv=((15.0, 25.0),),
    lesion_diameter_mm=((2.5, 4.0), (30.0, 45.0)),
    lesion_suv_fdg=((1.5, 3.0), (20.0, 40.0)),
    lesion_suv_lu177=((2.0, 5.0), (50.0, 100.0)),
    lesion_ratio_tc_bone=((1.2, 2.0), (8.0, 15.0)),
    lesion_ratio_tc_soft=((0.5, 0.8), (1.5, 2.5)),
    lesion_hosts=(
        ("liver", 0.1), ("lung", 0.25), ("trabecular_bone", 0.2), ("cortical_bone", 0.15), ("soft_tissue", 0.1),
        ("spleen", 0.05), ("kidney_right", 0.025), ("kidney_left", 0.025), ("muscle", 0.05), ("fat", 0.05),
    ),
)  # fmt: skip

#: Torso families by name: ``make_torso_phantom(..., variety="shifted")``.
VARIETIES: dict[str, TorsoVariety] = {"training": TRAINING_VARIETY, "shifted": SHIFTED_VARIETY}


def _draw(rng: np.random.Generator, ranges: Ranges) -> float:
    """One value from a union of intervals: interval with equal probability, then uniform in it.

    Takes one number from ``rng`` (so the stream does not depend on the number of intervals); for
    one interval this equals ``rng.uniform(lo, hi)``.
    """
    u = float(rng.random()) * len(ranges)
    k = min(int(u), len(ranges) - 1)
    lo, hi = ranges[k]
    return lo + (u - k) * (hi - lo)


def _draw_log(rng: np.random.Generator, ranges: Ranges) -> float:
    """Log-uniform counterpart of :func:`_draw` (one number from ``rng``)."""
    return float(np.exp(_draw(rng, tuple((math.log(lo), math.log(hi)) for lo, hi in ranges))))



@dataclass
class Phantom:
    """One procedural subject. Arrays are [X, Y, Z] in RAS (Z axial slices).

    Attributes:
        labels: int16 label map, ids of :data:`LABELS`; lesions ``>= LESION_ID_START``.
        label_names: id -> name for every tissue of this phantom kind and every lesion.
        ct_hu: float32 CT in HU with noise.
        mr_t1: float32 T1-weighted-like image, arbitrary units (fat about 1).
        activity: tracer -> float32 concentration in Bq/mL (decay-corrected to injection).
        organ_uptake: tracer -> organ name -> configured mean concentration (Bq/mL) of that organ.
        lesions: one dict per lesion: ``id``, ``organ`` (host), ``centre_mm`` (RAS, affine frame),
            ``diameter_mm`` (nominal; the spheroid is clipped to its host organ), ``n_voxels``,
            ``hu``, ``suv`` {tracer: SUV}, ``uptake_ratio`` {tracer: lesion concentration /
            host-organ configured concentration}. Hosts: liver, lung, trabecular and cortical bone,
            soft tissue (nodes), spleen, kidneys, muscle, fat (torso, :attr:`TorsoVariety.lesion_hosts`);
            white/grey matter, cerebellum (head).
        weight_kg: body weight of the subject, the W of SUV (torso: from the family, training
            20-150 kg; head: 50-110 kg; not the mass in the field of view).
        injected_activity_Bq: tracer -> injected activity (Bq).
        uptake_time_s: tracer -> time from injection to scan (s).
        spacing_mm: voxel size (sx, sy, sz), mm.
        affine: 4x4 RAS affine (mm), volume centred on the origin.
        kind: ``"torso"`` or ``"head"``.
        params: sampled subject parameters for bookkeeping: for a torso every value of the family
            table in the module docstring (``family``, ``arms_mode``, ``arm_gap_mm``,
            ``shoulder_scale``, ``waist_scale``, ``lung_scale``, ``diaphragm_mm``,
            ``soft_hu_offset``, ``bone_hu_scale``, ``myocardium_suv``, ``brown_fat``, ...) and
            derived ones (``stature_scale``, ``fat_mm``, ``trunk_width_mm``, ``bladder_mL``, ...);
            for both kinds the HU per tissue (``hu``), CT noise std in HU, MR noise level.
    """

    labels: np.ndarray = field(repr=False)
    label_names: dict[int, str] = field(repr=False)
    ct_hu: np.ndarray = field(repr=False)
    mr_t1: np.ndarray = field(repr=False)
    activity: dict[str, np.ndarray] = field(repr=False)
    organ_uptake: dict[str, dict[str, float]]
    lesions: list[dict]
    weight_kg: float
    injected_activity_Bq: dict[str, float]
    uptake_time_s: dict[str, float]
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    kind: str = "torso"
    params: dict = field(default_factory=dict, repr=False)

    def suv(self, tracer: str) -> np.ndarray:
        """SUV image of ``tracer``: concentration x weight_g / injected activity (float32)."""
        return (self.activity[tracer] * (self.weight_kg * 1000.0 / self.injected_activity_Bq[tracer])).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------

_MIN_SIZE = 16


def _check_inputs(seed, shape, spacing_mm) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if isinstance(seed, bool) or not (
        isinstance(seed, (int, np.integer))
        or (isinstance(seed, Sequence) and len(seed) > 0 and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seed))
    ):
        raise ValueError(f"seed must be a non-negative int or a non-empty sequence of them, got {seed!r}")
    if any(int(s) < 0 for s in (seed if isinstance(seed, Sequence) else [seed])):
        raise ValueError(f"seed must be non-negative, got {seed!r}")
    try:
        shp = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be 3 positive ints, got {shape!r}") from None
    if len(shp) != 3 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in shp):
        raise ValueError(f"shape must be 3 positive ints, got {shape!r}")
    if min(shp) < _MIN_SIZE:
        raise ValueError(f"shape must be at least {_MIN_SIZE} voxels along every axis, got {shape!r}")
    try:
        sp = tuple(float(s) for s in spacing_mm)
    except (TypeError, ValueError):
        raise ValueError(f"spacing_mm must be 3 positive numbers (mm), got {spacing_mm!r}") from None
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing_mm must be 3 positive finite numbers (mm), got {spacing_mm!r}")
    return tuple(int(n) for n in shp), sp  # type: ignore[return-value]


def _check_n_lesions(n_lesions) -> tuple[int, int]:
    lo, hi = (n_lesions, n_lesions) if isinstance(n_lesions, (int, np.integer)) else tuple(n_lesions)
    if not (0 <= int(lo) <= int(hi) <= _MAX_LESIONS):
        raise ValueError(f"n_lesions must be an int or (min, max) within 0..{_MAX_LESIONS}, got {n_lesions!r}")
    return int(lo), int(hi)


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def _bspline3(u: np.ndarray) -> np.ndarray:
    a = np.abs(u)
    return np.where(a < 1, (4 - 6 * a**2 + 3 * a**3) / 6, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def _child(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator drawn from ``rng`` with one draw.

    Arrays whose size depends on shape/spacing are drawn from children, so the main stream (organ
    sizes, positions, tissue values, uptakes) is the same for one seed at any resolution.
    """
    return np.random.default_rng(int(rng.integers(0, 2**63)))


def _smooth_noise(rng: np.random.Generator, shape, spacing, corr_mm: float, n: int = 1) -> np.ndarray:
    """``n`` smooth Gaussian random fields [n, X, Y, Z] (float64, zero mean, unit std), correlation ~corr_mm.

    White noise on a coarse grid of step ``corr_mm`` is upsampled with cubic B-splines, one
    separable matrix product per axis: fast and exactly reproducible.
    """
    rng = _child(rng)
    mats = []
    for length, sp in zip(shape, spacing):
        t = np.arange(length) * sp / corr_mm + rng.uniform(0, 1)
        knots = np.arange(-2, int(math.ceil(t[-1])) + 3)
        mats.append(_bspline3(t[:, None] - knots[None, :]))
    out = rng.standard_normal((n, *(m.shape[1] for m in mats)))
    mx, my, mz = mats  # separable upsampling, one matrix product per axis (z, then y, then x)
    out = out @ mz.T
    out = (out.transpose(0, 1, 3, 2) @ my.T).transpose(0, 1, 3, 2)
    out = (out.transpose(0, 2, 3, 1) @ mx.T).transpose(0, 3, 1, 2)
    out -= out.mean(axis=(1, 2, 3), keepdims=True)
    out /= out.std(axis=(1, 2, 3), keepdims=True)
    return np.ascontiguousarray(out)


def _rotation(angles_deg) -> np.ndarray:
    rx, ry, rz = np.deg2rad(angles_deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


class _Grid:
    """Voxel-centre coordinates (mm) in the subject's anatomical frame.

    World (affine) coordinates are centred on the volume; the anatomy frame is the world frame
    rotated about Z by ``yaw_deg``, shifted by ``shift_mm`` (patient positioning) and divided by
    ``scale`` (the subject's stature: anatomy is defined for an adult, a child is the same anatomy
    at ``scale`` < 1). Anatomy coordinates are "adult-size millimetres"; one of them spans
    ``scale`` mm of the image.
    """

    def __init__(self, shape, spacing, yaw_deg: float = 0.0, shift_mm=(0.0, 0.0, 0.0), scale: float = 1.0):
        self.shape, self.spacing = shape, spacing
        # float64 geometry: a label decided by float32 rounding could differ between CPUs (SIMD
        # transcendental functions differ by an ulp); in float64 such ties are vanishingly rare
        self.world = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
        self.c, self.s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
        self.shift = np.asarray(shift_mm, dtype=np.float64)
        self.scale = float(scale)
        k = 1.0 / self.scale  # exactly 1.0 at scale 1, so unscaled grids keep their exact coordinates
        x, y = self.world[0][:, None], self.world[1][None, :]
        self.X = ((self.c * x + self.s * y - self.shift[0]) * k)[:, :, None]
        self.Y = ((-self.s * x + self.c * y - self.shift[1]) * k)[:, :, None]
        self.Z = ((self.world[2] - self.shift[2]) * k)[None, None, :]

    def to_world(self, p) -> np.ndarray:
        u, v, w = (p[i] * self.scale + self.shift[i] for i in range(3))
        return np.array([self.c * u - self.s * v, self.s * u + self.c * v, w])

    def box(self, lo, hi) -> tuple[slice, slice, slice]:
        """Index slices covering the anatomical box [lo, hi] (mm)."""
        corners = np.array([self.to_world((x, y, lo[2])) for x in (lo[0], hi[0]) for y in (lo[1], hi[1])])
        wlo, whi = corners.min(0), corners.max(0)
        wlo[2], whi[2] = lo[2] * self.scale + self.shift[2], hi[2] * self.scale + self.shift[2]
        out = []
        for k in range(3):
            n, sp = self.shape[k], self.spacing[k]
            i0 = int(math.floor(wlo[k] / sp + (n - 1) / 2))
            i1 = int(math.ceil(whi[k] / sp + (n - 1) / 2)) + 1
            out.append(slice(min(max(i0, 0), n), min(max(i1, 0), n)))
        return tuple(out)  # type: ignore[return-value]

    def sub(self, sl):
        return self.X[sl[0], sl[1]], self.Y[sl[0], sl[1]], self.Z[:, :, sl[2]]


def _ellipsoid(grid: _Grid, centre, axes, angles=(0.0, 0.0, 0.0), p: float = 2.0, box_r: float | None = None):
    """Normalised superquadric value f = sum(|u_i/a_i|^p) (< 1 inside) on the bounding box.

    The box is the cube of half-width ``box_r`` (default: the largest half-axis) around the centre;
    give the same ``box_r`` to get nested shapes on one box.
    """
    r = float(max(axes)) if box_r is None else float(box_r)
    c = np.asarray(centre, dtype=np.float64)
    sl = grid.box(c - r, c + r)
    x, y, z = grid.sub(sl)
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    rot = _rotation(angles)
    f = None
    for k in range(3):
        u = rot[0, k] * dx + rot[1, k] * dy + rot[2, k] * dz
        term = (u / axes[k]) ** 2 if p == 2.0 else np.abs(u / axes[k]) ** p
        f = term if f is None else f + term
    return sl, f


def _segment(grid: _Grid, p0, p1, rmax: float):
    """Distance (mm) to the segment p0-p1 and the position t in [0, 1] along it, on its bounding box."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    sl = grid.box(np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax)
    x, y, z = grid.sub(sl)
    d = p1 - p0
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0, 1)
    dist = np.sqrt((x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2)
    return sl, dist, t


def _paint(labels: np.ndarray, sl, mask: np.ndarray, name: str, only: Sequence[str] | None = None) -> None:
    """Set ``labels[sl][mask]`` to ``name``'s id, optionally only where the current label is in ``only``."""
    view = labels[sl]
    mask = np.broadcast_to(mask, view.shape)
    if only is not None:
        mask = mask & np.isin(view, [LABELS[n] for n in only])
    view[mask] = LABELS[name]


def _bone(labels, sl, f_outer, f_inner, only=None) -> None:
    """Cortical shell (f_outer < 1, f_inner >= 1) around a trabecular core (f_inner < 1)."""
    _paint(labels, sl, f_outer < 1, "cortical_bone", only)
    _paint(labels, sl, (f_inner < 1) & (f_outer < 1), "trabecular_bone", only)


def _shell_t(spacing) -> float:
    """Cortical shell thickness (mm): thin shells still cover one voxel at coarse spacing."""
    return max(2.0, 0.85 * max(spacing))


def _bone_ellipsoid(grid, labels, centre, axes, angles=(0, 0, 0), t=3.0, only=None, p=2.0) -> None:
    sl, fo = _ellipsoid(grid, centre, axes, angles, p)
    _, fi = _ellipsoid(grid, centre, [max(a - t, 0.5) for a in axes], angles, p, box_r=max(axes))
    _bone(labels, sl, fo, fi, only)


def _rod(grid, labels, p0, p1, r, t, only=None) -> None:
    """A bone rod (cortical tube around trabecular core) along segment p0-p1."""
    sl, dist, _ = _segment(grid, p0, p1, r)
    _bone(labels, sl, (dist / r) ** 2, (dist / max(r - t, 0.3)) ** 2, only)


def _spine(grid, labels, z_top, z_bottom, y_of_z, rx_of_z, ry_of_z, pitch, disc, t, scale=1.0, canal_r=7.5) -> None:
    """Vertebrae from z_top down to z_bottom: bodies (shell + core), discs, arch, processes, canal.

    y_of_z, rx_of_z, ry_of_z: callables of a z array (mm) giving the vertebral-body centre (y) and
    half-axes; pitch: vertebral height incl. disc (mm); disc: disc height (mm).
    """
    z1 = grid.Z[0, 0]
    levels = np.flatnonzero((z1 <= z_top) & (z1 >= z_bottom))
    if levels.size == 0:
        return
    zs = slice(int(levels[0]), int(levels[-1]) + 1)
    z = z1[zs]
    yc, rx, ry = y_of_z(z), rx_of_z(z), ry_of_z(z)
    phase = ((z_top - z) / pitch) % 1.0  # 0 at the top of a vertebra; the disc is the last part
    in_body = phase < 1.0 - disc / pitch
    endplate = (phase < t / pitch) | (phase > 1.0 - (disc + t) / pitch)
    x0 = float(np.max(rx)) * 2.5 * scale
    sl = grid.box((-x0 - 40 * scale, float(np.min(yc)) - 80 * scale, float(z_bottom)), (x0 + 40 * scale, float(np.max(yc)) + 40 * scale, float(z_top)))
    sl = (sl[0], sl[1], slice(max(sl[2].start, zs.start), min(sl[2].stop, zs.stop)))
    k0 = sl[2].start - zs.start
    nz = sl[2].stop - sl[2].start
    if nz <= 0:
        return
    yc, rx, ry = (a[k0 : k0 + nz][None, None, :] for a in (yc, rx, ry))
    phase, in_body, endplate = (a[k0 : k0 + nz][None, None, :] for a in (phase, in_body, endplate))
    x, y, _ = grid.sub(sl)
    view = labels[sl]
    dy = y - yc
    f_body = (x / rx) ** 2 + (dy / ry) ** 2
    f_core = (x / (rx - t)) ** 2 + (dy / (ry - t)) ** 2
    body = (f_body < 1) & in_body
    disc_m = (f_body < 1) & ~in_body
    canal_y = -ry - canal_r - 0.5
    r_canal = np.sqrt(x**2 + (dy - canal_y) ** 2)
    arch_level = (phase > 0.08) & (phase < 0.8)
    arch = (r_canal > canal_r) & (r_canal < canal_r + 6.5 * scale) & (dy < canal_y + 5.0 * scale) & arch_level
    spinous = (np.abs(x) < 4.0 * scale) & (dy < canal_y - 10 * scale) & (dy > canal_y - 40 * scale + 25 * scale * (phase - 0.2)) & (phase > 0.2) & (phase < 0.75)
    transverse = (np.abs(x) > 10 * scale) & (np.abs(x) < 34 * scale) & (np.abs(dy - canal_y - 2 * scale) < 5 * scale) & (phase > 0.25) & (phase < 0.65)
    cortical = (body & ((f_core >= 1) | endplate)) | arch | spinous | transverse
    view[np.broadcast_to(disc_m, view.shape)] = LABELS["soft_tissue"]
    view[np.broadcast_to(cortical, view.shape)] = LABELS["cortical_bone"]
    view[np.broadcast_to(body & (f_core < 1) & ~endplate, view.shape)] = LABELS["trabecular_bone"]
    view[np.broadcast_to((r_canal <= canal_r), view.shape)] = LABELS["soft_tissue"]


# --------------------------------------------------------------------------------------------
# Torso anatomy
# --------------------------------------------------------------------------------------------


def _superellipse(x, y, a, b_ant, b_post, p_ant, p_post):
    """Normalised radius^p of a superellipse with separate anterior/posterior half-axes."""
    ant = y > 0
    b = np.where(ant, b_ant, b_post)
    p = np.where(ant, p_ant, p_post)
    return np.abs(x / a) ** p + np.abs(y / b) ** p


def _stature(weight_kg: float, height_scale: float) -> float:
    """Anatomy scale of a subject: 1 for an adult of average height; children (below 55 kg) shrink
    as (weight / 55 kg)^0.4 (height of a 20 kg child about 2/3 of an adult's), times ``height_scale``."""
    return (min(weight_kg, 55.0) / 55.0) ** 0.4 * height_scale


def _fat_mm(weight_kg: float, stature: float, adiposity: float) -> float:
    """Reference subcutaneous fat thickness (image mm) from a BMI-like index: 1.72 m x stature tall."""
    bmi = weight_kg / (1.72 * stature) ** 2
    return float(np.clip(2.0 + 1.1 * (bmi - 17.0) * adiposity, 2.5, 55.0))


def _sample_torso(rng: np.random.Generator, v: TorsoVariety, weight_kg: float, arms) -> dict:
    """Every subject-level parameter of a torso from ``v``, in a fixed order of draws.

    All draws happen whatever is forced (``arms``), so forcing one parameter never changes another.
    """
    S: dict = {"family": v.name}
    S["height_scale"] = _draw(rng, v.height_scale)
    S["stature_scale"] = _stature(weight_kg, S["height_scale"])
    S["adiposity"] = _draw(rng, v.adiposity)
    S["fat_mm"] = _fat_mm(weight_kg, S["stature_scale"], S["adiposity"])
    for k in ("shoulder_scale", "waist_scale", "aspect_scale"):
        S[k] = _draw(rng, getattr(v, k))
    # arms: mode, gap, height of the shoulder, y of the arm axis, lengths and girth
    u_arms = float(rng.random())
    gap = _draw(rng, v.arm_gap_mm)
    S["arm_geometry"] = {
        "z_shoulder": float(rng.uniform(225, 245)), "y": float(rng.normal(-12, 6)), "upper": float(rng.uniform(280, 320)),
        "fore": float(rng.uniform(240, 270)), "girth": float(rng.uniform(0.9, 1.1)),
    }  # fmt: skip
    p = np.asarray(v.arms_probabilities, dtype=np.float64)
    if arms is True:  # arms down beside the body, in one of the down positions of the family
        p = p * np.array([1.0, 1.0, 0.0]) if p[:2].sum() > 0 else np.array([0.0, 1.0, 0.0])
    cum = np.cumsum(p / p.sum())
    mode = ARMS_MODES[min(int(np.searchsorted(cum, u_arms, side="right")), 2)]
    if arms is False:
        mode = "raised"
    elif isinstance(arms, str):
        mode = arms
    S["arms_mode"] = mode
    S["arm_gap_mm"] = gap if mode == "separate" else (0.0 if mode == "touching" else None)
    for k in ("lung_scale", "lung_apex_mm", "diaphragm_mm", "diaphragm_lr_mm", "soft_hu_offset", "bone_hu_scale", "lung_suv"):
        S[k] = _draw(rng, getattr(v, k))
    u_myo, myo_low, myo_high = float(rng.random()), _draw(rng, v.myocardium_low_suv), _draw(rng, v.myocardium_high_suv)
    S["myocardium_high"] = u_myo < v.myocardium_high_probability
    S["myocardium_suv"] = myo_high if S["myocardium_high"] else myo_low
    for k in ("bladder_fill", "bladder_suv", "bowel_uptake"):
        S[k] = _draw(rng, getattr(v, k))
    u_bf, bf_suv = float(rng.random()), _draw(rng, v.brown_fat_suv)
    S["brown_fat"] = u_bf < v.brown_fat_probability
    S["brown_fat_suv"] = bf_suv if S["brown_fat"] else None
    return S


def _torso_anatomy(rng: np.random.Generator, grid: _Grid, weight_kg: float, S: dict):
    """Torso label map in the anatomy frame (adult-size mm; ``grid.scale`` = stature) from the
    subject parameters ``S`` of :func:`_sample_torso`. Returns labels, bookkeeping params and masks
    (``trunk``: the body without arms; ``bowel``: abdominal soft tissue)."""
    shape = grid.shape
    labels = np.zeros(shape, dtype=np.int16)
    X, Y, Z = grid.X, grid.Y, grid.Z
    z1 = Z[0, 0].astype(np.float64)
    t_sh = _shell_t(grid.spacing) / grid.scale  # cortical shells still cover a voxel of the image
    shape_noise = _smooth_noise(rng, shape, grid.spacing, 45.0)[0]
    P: dict = {}

    # --- body outline: lean superellipse + subcutaneous fat growing with weight. Control heights run
    # from the neck (z 320) over the shoulders (265..230), chest, waist (-30..-110) to the hips and
    # thighs (-200..-400); shoulders, waist and the AP/lateral aspect are per-subject factors
    frame = rng.normal(1.0, 0.04) * (max(weight_kg, 55.0) / 75.0) ** 0.12
    fat_mm = S["fat_mm"] / grid.scale
    P.update(frame=frame, fat_mm=S["fat_mm"])
    zc = [320.0, 265.0, 230.0, 150.0, 60.0, -30.0, -110.0, -200.0, -260.0, -400.0]
    v_a = np.array([60, 132, 150, 152, 148, 136, 146, 155, 155, 150], float) + rng.normal(0, 4.0, len(zc))
    v_ba = np.array([50, 80, 92, 98, 98, 92, 88, 85, 85, 82], float) + rng.normal(0, 4.0, len(zc))
    v_bp = np.array([55, 88, 100, 102, 100, 92, 92, 98, 98, 95], float) + rng.normal(0, 3.0, len(zc))
    sh, wa, asp = S["shoulder_scale"], S["waist_scale"], math.sqrt(S["aspect_scale"])

    def outline(z):
        """Lean half-axes (lateral, anterior, posterior) and fat thickness (ant, lat, post) at heights z."""
        f_sh = np.interp(z, [60.0, 150.0, 265.0, 320.0], [1.0, 0.5 * (1 + sh), sh, 1.0])
        f_wa = np.interp(z, [60.0, -30.0, -110.0, -200.0], [1.0, wa, wa, 0.5 * (1 + wa)])
        a = np.interp(z, zc, v_a) * frame * f_sh * f_wa / asp
        b_a = np.interp(z, zc, v_ba) * frame * f_wa * asp
        b_p = np.interp(z, zc, v_bp) * frame * (0.5 * (1 + f_wa)) * asp
        f_a = fat_mm * np.interp(z, zc, [0.5, 0.6, 0.6, 0.7, 0.9, 1.5, 1.5, 1.2, 1.2, 1.2])
        f_l = fat_mm * np.interp(z, zc, [0.5, 0.6, 0.6, 0.7, 0.9, 1.2, 1.3, 1.4, 1.4, 1.4])
        return a, b_a, b_p, f_a, f_l, 0.8 * fat_mm * np.ones_like(f_a)

    a_lean, b_ant_lean, b_post_lean, fat_ant, fat_lat, fat_post = outline(z1)
    p_ant, p_post = rng.uniform(2.1, 2.5), rng.uniform(2.6, 3.2)
    bend = 1.0 + 0.03 * shape_noise  # wobble of the outline
    a_, ba, bp = (v[None, None, :] for v in (a_lean, b_ant_lean, b_post_lean))
    fa, fl, fp = (v[None, None, :] for v in (fat_ant, fat_lat, fat_post))
    body = _superellipse(X, Y, a_ + fl, ba + fa, bp + fp, p_ant, p_post) < bend
    lean = _superellipse(X, Y, a_, ba, bp, p_ant, p_post) < bend
    # body cavity (ribcage above the diaphragm): lean minus the muscle wall; the chest part is
    # scaled by lung_scale (a smaller ribcage in a thicker chest wall), never closer than 6 mm to the
    # lean outline; it ends at the pelvic floor (thighs below are muscle)
    m_lat, m_ant, m_post = rng.uniform(9, 14), rng.uniform(9, 14), rng.uniform(14, 20)
    g = np.interp(z1, [-40.0, 40.0], [1.0, S["lung_scale"]])
    ca = np.minimum((a_lean - m_lat) * g, a_lean - 6.0)
    cba = np.minimum((b_ant_lean - m_ant) * g, b_ant_lean - 6.0)
    cbp = np.minimum((b_post_lean - m_post) * g, b_post_lean - 8.0)
    z_floor = -228.0
    cavity = (_superellipse(X, Y, ca[None, None, :], cba[None, None, :], cbp[None, None, :], p_ant, 2.4) < 1.0) & (Z > z_floor)
    labels[body] = LABELS["fat"]
    labels[lean] = LABELS["muscle"]
    labels[cavity] = LABELS["soft_tissue"]
    o = outline(np.array([-60.0]))  # at the navel
    P.update(trunk_width_mm=float(2 * (o[0] + o[4])[0] * grid.scale), trunk_depth_mm=float((o[1] + o[3] + o[2] + o[5])[0] * grid.scale))

    # --- spine line (vertebral body centre ~70 mm in front of the lean back surface; ~35 mm in the neck)
    kyph = lambda z: np.interp(z, [-260, -120, 0, 120, 240], [4, 6, 0, -6, -2])  # noqa: E731
    d_spine = lambda z: np.interp(z, [265.0, 320.0], [70.0, 35.0])  # noqa: E731
    y_spine = lambda z: (-np.interp(z, z1, b_post_lean) + d_spine(z) * frame + kyph(z))  # noqa: E731

    # --- diaphragm: two domes; the lungs sit above, abdomen below
    z_dr = S["diaphragm_mm"]
    z_dl = z_dr - S["diaphragm_lr_mm"]
    P.update(z_diaphragm_right=z_dr, z_diaphragm_left=z_dl)
    dome_r = z_dr - 0.009 * (X - 55) ** 2 - 0.0075 * (Y - 10) ** 2
    dome_l = z_dl - 0.009 * (X + 55) ** 2 - 0.0075 * (Y - 10) ** 2
    zd = np.maximum(dome_r, dome_l)  # [X, Y, 1]
    thorax = cavity & (Z > zd)
    abdomen = cavity & (Z <= zd)

    # --- abdominal contents: bowel (soft tissue) with visceral fat and gas
    vf, gas = _smooth_noise(rng, shape, grid.spacing, 14.0, 2)
    vfat_frac = float(np.clip(0.1 + 0.006 * (weight_kg - 50) * S["adiposity"] + rng.normal(0, 0.04), 0.05, 0.65))
    P["visceral_fat_fraction"] = vfat_frac
    thr = float(np.quantile(vf[::4, ::4, ::4], 1 - vfat_frac))
    labels[abdomen & (vf > thr)] = LABELS["fat"]
    labels[abdomen & (gas > 2.3) & (Z < zd - 25) & (Z > -185)] = LABELS["bowel_gas"]

    # --- lungs: cavity above the diaphragm minus a mediastinal band, capped at the apex
    med_half = 14.0 + 8.0 * shape_noise  # mediastinal half-width, mm
    apex = S["lung_apex_mm"]
    for side in (1, -1):
        sl, f_cap = _ellipsoid(grid, (side * 75, 0, 80), (120, 140, apex - 80.0))
        m = (f_cap < 1) & thorax[sl] & (side * X[sl[0], sl[1]] > med_half[sl])
        _paint(labels, sl, m, "lung")

    # --- mediastinum above the heart (great vessels, oesophagus) stays soft tissue
    yv_top = float(y_spine(np.array([150.0]))[0])
    sl, f = _ellipsoid(grid, (0, yv_top + 45, 160), (26, 40, 80))
    _paint(labels, sl, f < 1, "soft_tissue", only=("lung",))

    # --- heart: myocardium shell around blood pool, resting on the left dome
    h_c = (rng.normal(-22, 6), rng.normal(38, 5), z_dl + rng.uniform(38, 50))
    h_ax = np.array([58.0, 44.0, 50.0]) * rng.uniform(0.9, 1.1, 3) * frame
    h_rot = (rng.normal(0, 6), rng.normal(20, 6), rng.normal(-35, 8))
    wall = rng.uniform(8, 13)
    sl, f = _ellipsoid(grid, h_c, h_ax, h_rot)
    _paint(labels, sl, (f < 1) & cavity[sl], "myocardium")
    sl, f = _ellipsoid(grid, h_c, h_ax - wall, h_rot)
    _paint(labels, sl, f < 1, "blood_pool", only=("myocardium",))
    P.update(heart_centre=h_c)

    # --- aorta: ascending, arch and descending (left-anterior of the spine)
    r_ao = rng.uniform(10, 13)
    y_desc = lambda z: y_spine(np.asarray(z, float)) + 32.0  # noqa: E731
    z_arch = rng.uniform(125, 140)
    asc0 = (h_c[0] + 18, h_c[1] - 5, h_c[2] + 20)
    asc1 = (-2.0, h_c[1] - 5, z_arch)
    sl, d, _ = _segment(grid, asc0, asc1, r_ao)
    _paint(labels, sl, d < r_ao, "blood_pool", only=("soft_tissue", "lung", "fat", "muscle"))
    yd_top = float(y_desc(z_arch))
    yc_arch = 0.5 * (asc1[1] + yd_top)
    r_arch = 0.5 * (asc1[1] - yd_top)
    sl = grid.box((-30, yd_top - r_ao - 2, z_arch - 2), (10, asc1[1] + r_ao + 2, z_arch + r_arch + r_ao + 2))
    x, y, z = grid.sub(sl)
    xa = -2.0 + (-18.0 + 2.0) * np.clip((asc1[1] - y) / (asc1[1] - yd_top), 0, 1)
    d_arch = np.sqrt((np.sqrt((y - yc_arch) ** 2 + (z - z_arch) ** 2) - r_arch) ** 2 + (x - xa) ** 2)
    _paint(labels, sl, (d_arch < r_ao) & (z >= z_arch), "blood_pool", only=("soft_tissue", "lung", "fat", "muscle"))
    zz = np.linspace(-110, z_arch, 12)
    for za, zb in zip(zz[:-1], zz[1:]):
        sl, d, _ = _segment(grid, (-18, y_desc(za), za), (-18, y_desc(zb), zb), r_ao)
        _paint(labels, sl, d < r_ao * (0.85 if za < 0 else 1.0), "blood_pool", only=("soft_tissue", "lung", "fat", "muscle", "bowel_gas"))

    # --- trachea and main bronchi
    z_car = rng.uniform(110, 125)
    y_tr = float(y_spine(np.array([z_car]))[0]) + 42.0
    r_tr = rng.uniform(7.5, 10)
    sl, d, _ = _segment(grid, (0, y_tr, z_car), (0, y_tr + 8, 300), r_tr)
    _paint(labels, sl, d < r_tr, "airway", only=("soft_tissue", "lung", "muscle", "fat"))
    for side in (1, -1):
        sl, d, _ = _segment(grid, (0, y_tr, z_car), (side * 50, y_tr - 10, z_car - 35), 7)
        _paint(labels, sl, d < r_tr * 0.7, "airway", only=("soft_tissue", "lung"))

    # --- liver (right lobe + left lobe), under the right dome
    l_c = (rng.normal(62, 6), rng.normal(5, 5), z_dr - rng.uniform(55, 70))
    l_ax = np.array([95.0, 88.0, 78.0]) * rng.uniform(0.88, 1.12, 3) * frame
    sl, f = _ellipsoid(grid, l_c, l_ax, (rng.normal(0, 5), rng.normal(0, 5), rng.normal(10, 8)))
    m = (f < 1 + 0.15 * shape_noise[sl]) & abdomen[sl] & (Z[:, :, sl[2]] < zd[sl[0], sl[1]] - 2)
    _paint(labels, sl, m, "liver")
    ll_c = (l_c[0] - rng.uniform(80, 100), l_c[1] + rng.uniform(30, 45), l_c[2] + rng.uniform(10, 25))
    sl, f = _ellipsoid(grid, ll_c, np.array([65.0, 38.0, 40.0]) * rng.uniform(0.8, 1.15, 3), (0, 0, rng.normal(15, 8)))
    _paint(labels, sl, (f < 1 + 0.15 * shape_noise[sl]) & abdomen[sl] & (Z[:, :, sl[2]] < zd[sl[0], sl[1]] - 2), "liver")

    # --- spleen: posterior-left, along the ribs
    s_c = (rng.normal(-92, 6), rng.normal(-40, 6), z_dl - rng.uniform(35, 55))
    s_ax = np.array([26.0, 55.0, 48.0]) * rng.uniform(0.8, 1.2, 3)
    sl, f = _ellipsoid(grid, s_c, s_ax, (rng.normal(0, 8), rng.normal(0, 8), rng.normal(-40, 10)))
    _paint(labels, sl, (f < 1 + 0.1 * shape_noise[sl]) & abdomen[sl], "spleen")

    # --- kidneys in perirenal fat, either side of the lumbar spine (right lower)
    for name, side in (("kidney_right", 1), ("kidney_left", -1)):
        zk = (z_dr - rng.uniform(110, 135)) if side > 0 else (z_dl - rng.uniform(95, 120))
        yk = float(y_spine(np.array([zk]))[0]) - rng.uniform(0, 10)
        k_c = (side * rng.uniform(58, 72), yk, zk)
        k_ax = np.array([27.0, 24.0, 55.0]) * rng.uniform(0.88, 1.12, 3)
        k_rot = (rng.normal(-10, 5), side * rng.normal(12, 5), side * rng.normal(30, 10))
        sl, f = _ellipsoid(grid, k_c, k_ax + 9, k_rot)
        _paint(labels, sl, f < 1, "fat", only=("soft_tissue", "bowel_gas", "fat"))
        sl, f = _ellipsoid(grid, k_c, k_ax, k_rot)
        _paint(labels, sl, (f < 1 + 0.05 * shape_noise[sl]) & cavity[sl], name)

    # --- bladder: empty (about 10 mL) to full (about 500 mL) with bladder_fill 0..1
    b_ax = np.array([45.0, 38.0, 35.0]) * (0.35 + 0.9 * S["bladder_fill"]) * rng.uniform(0.9, 1.1)
    P["bladder_mL"] = float(4 / 3 * math.pi * np.prod(b_ax) * grid.scale**3 / 1000.0)  # nominal, before clipping
    b_c = (rng.normal(0, 5), rng.normal(38, 6), -178 + b_ax[2] * 0.6)
    sl, f = _ellipsoid(grid, b_c, b_ax, (rng.normal(0, 5), 0, 0))
    _paint(labels, sl, (f < 1) & cavity[sl], "bladder")

    # --- psoas muscles along the lumbar spine, glutei behind the pelvis
    for side in (1, -1):
        zt, zb = z_dl - 40, -190.0
        yt, yb = float(y_spine(np.array([zt]))[0]) + 5, float(y_spine(np.array([zb]))[0]) + 35
        sl, d, t = _segment(grid, (side * 32, yt, zt), (side * 62, yb, zb), 26)
        _paint(labels, sl, d < 10 + 14 * t, "muscle", only=("soft_tissue", "fat", "bowel_gas"))
        sl, f = _ellipsoid(grid, (side * 85, -70, -185), (70, 45, 60), (0, 0, side * 20))
        _paint(labels, sl, (f < 1) & lean[sl], "muscle", only=("soft_tissue", "fat", "bowel_gas"))

    # --- bones
    _spine(
        grid, labels, z_top=340.0, z_bottom=-150.0, y_of_z=y_spine,
        rx_of_z=lambda z: np.interp(z, [-150, 0, 200, 300], [25, 22, 16, 13]) * frame,
        ry_of_z=lambda z: np.interp(z, [-150, 0, 200, 300], [18, 16, 13, 11]) * frame,
        pitch=rng.uniform(27, 31), disc=rng.uniform(6, 8), t=t_sh,
    )  # fmt: skip
    # sacrum: tilted wedge behind the bladder
    y_sac = float(y_spine(np.array([-170.0]))[0]) - 5
    _bone_ellipsoid(grid, labels, (0, y_sac, -175), (45, 18, 40), (rng.normal(-35, 5), 0, 0), t_sh)
    # iliac wings: curved plates (partial ellipsoid shells) flaring from the sacrum
    # iliac wings: each the lower part of an ellipsoidal bowl shell, flaring out to the iliac crest
    # and narrowing down to the acetabulum; femoral heads in acetabular sockets; pubic rami
    il_ax = np.array([95.0, 70.0, 85.0]) * rng.uniform(0.92, 1.08) * frame
    il_top = -rng.uniform(100, 120)
    il_t = rng.uniform(9, 13)
    for side in (1, -1):
        c = (side * 20, -5, il_top + 5)
        sl, fo = _ellipsoid(grid, c, il_ax, box_r=max(il_ax))
        _, fi = _ellipsoid(grid, c, il_ax - il_t, box_r=max(il_ax))
        _, fm_o = _ellipsoid(grid, c, il_ax - t_sh, box_r=max(il_ax))
        _, fm_i = _ellipsoid(grid, c, il_ax - il_t + t_sh, box_r=max(il_ax))
        x, y, z = grid.sub(sl)
        # open towards the front-middle (iliac fossa): keep from the sacrum round to the ASIS
        ang = np.degrees(np.arctan2(y - c[1], side * x - c[0] * side))
        region = (side * x > 28) & (ang < 32) & (ang > -150) & (z < il_top) & (z > il_top - 70)
        _paint(labels, sl, (fo < 1) & (fi >= 1) & region, "cortical_bone")
        _paint(labels, sl, (fm_o < 1) & (fm_i >= 1) & region, "trabecular_bone")
        fh = (side * 88 * frame, 5, il_top - 92)
        sl, fo = _ellipsoid(grid, fh, (33, 33, 33))
        _, fi = _ellipsoid(grid, fh, (27, 27, 27), box_r=33)
        x, y, z = grid.sub(sl)
        _paint(labels, sl, (fo < 1) & (fi >= 1) & (z > fh[2] - 5), "cortical_bone")
        _bone_ellipsoid(grid, labels, fh, (24, 24, 24), (0, 0, 0), t_sh)
        _rod(grid, labels, fh, (side * 125 * frame, -5, fh[2] - 20), 15, t_sh)
        _rod(grid, labels, (side * 125 * frame, -5, fh[2] - 20), (side * 112 * frame, 5, -460), 14, t_sh)  # femoral shaft
        _rod(grid, labels, (side * 10, 70, fh[2]), (side * 75 * frame, 40, fh[2] + 8), 10, t_sh)
    # ribs: 12 curved rods per side, falling anteriorly; lower ones shorter
    _ribs(grid, labels, rng, (ca, cba, cbp, p_ant), y_spine, t_sh)
    # sternum, clavicles, scapulae
    z_st = rng.uniform(200, 215)
    sl = grid.box((-30, 0, 50), (30, 200, z_st))
    x, y, z = grid.sub(sl)
    y_front = np.interp(z, z1, cba)
    half_w = np.interp(z, [50, 150, 215], [8, 14, 24])
    fo = (x / half_w) ** 2 + ((y - (y_front - 1)) / 8.0) ** 2
    fi = (x / np.maximum(half_w - t_sh, 0.5)) ** 2 + ((y - (y_front - 1)) / max(8.0 - t_sh, 0.5)) ** 2
    zmask = (z < z_st) & (z > z_dl + rng.uniform(15, 30))
    _bone(labels, sl, np.where(zmask, fo, 2.0), np.where(zmask, fi, 2.0))
    for side in (1, -1):
        yf = float(np.interp(z_st, z1, cba))
        x_acromion = float(np.interp(z_st + 25, z1, a_lean)) - 10.0
        _rod(grid, labels, (side * 20, yf - 5, z_st), (side * x_acromion, yf - 60, z_st + 25), 8, t_sh)
        yb = float(np.interp(150, z1, b_post_lean))
        # scapula: a plate on the posterolateral chest wall, outside the rib cage
        sc_c = (side * (float(np.interp(150, z1, a_lean)) - 60 * frame), -yb + 26, 150)
        _bone_ellipsoid(grid, labels, sc_c, (55, 7, 70), (rng.normal(0, 4), 0, side * rng.normal(-25, 4)), t_sh, only=("muscle", "fat"))
    _brown_fat_depots(rng, grid, labels, a_lean, y_spine, frame)
    # air outside the body stays background; remove anything painted outside the outline
    labels[~body] = 0
    trunk = labels > 0
    # bowel: abdominal soft tissue away from the spine (canal, discs) and above the pelvic floor
    ys = y_spine(z1)[None, None, :]
    bowel = abdomen & (labels == LABELS["soft_tissue"]) & ~((np.abs(X) < 40) & (Y < ys + 25))
    if S["arms_mode"] != "raised":
        P.update(_arms(grid, labels, S, outline, (p_ant, p_post), frame, fat_mm, t_sh, trunk))
    return labels, P, {"trunk": trunk, "bowel": bowel}


def _brown_fat_depots(rng, grid, labels, a_lean, y_spine, frame) -> None:
    """Brown-adipose depots in every torso (FDG-active or not: :func:`_sample_torso`): supraclavicular
    and axillary fat pads and paravertebral strips beside the thoracic vertebral bodies."""
    z1 = grid.Z[0, 0]
    j = rng.uniform(0.85, 1.15, 3)
    for side in (1, -1):
        y_sc = float(y_spine(np.array([228.0]))[0]) + 40.0
        sl, f = _ellipsoid(grid, (side * 62 * frame, y_sc, 228), np.array([26.0, 18.0, 22.0]) * j[0])
        _paint(labels, sl, f < 1, "brown_fat", only=("fat", "muscle", "soft_tissue"))
        x_ax = float(np.interp(175.0, z1, a_lean)) - 25.0
        sl, f = _ellipsoid(grid, (side * x_ax, -10, 175), np.array([18.0, 28.0, 26.0]) * j[1])
        _paint(labels, sl, f < 1, "brown_fat", only=("fat", "muscle"))
        # paravertebral: beside the thoracic vertebral bodies (posterior mediastinum, at the lung's margin)
        y0, y1 = (float(y_spine(np.array([z]))[0]) - 4.0 for z in (200.0, 70.0))
        r = 8.0 * j[2]
        x0, x1 = 16.0 * frame + 10.0, 19.0 * frame + 10.0  # vertebral half-width at z 200 / 70 plus the depot
        sl, d, _ = _segment(grid, (side * x0, y0, 200), (side * x1, y1, 70), r)
        _paint(labels, sl, d < r, "brown_fat", only=("muscle", "fat", "soft_tissue", "lung"))


def _ribs(grid, labels, rng, cavity_axes, y_spine, t_sh) -> None:
    """12 rib pairs on the inner chest wall, falling anteriorly; lower ribs shorter.

    Each rib follows the cavity outline (``cavity_axes`` = half-axes a, b_ant, b_post per z and the
    anterior exponent) pushed 3 mm outwards; the rib index of a voxel comes from its height
    corrected for the anterior fall, so all ribs are drawn in one vectorised pass.
    """
    z1 = grid.Z[0, 0]
    a_c, ba_c, bp_c, p_ant = cavity_axes
    pitch = rng.uniform(24, 28)
    z_first = rng.uniform(225, 240)
    drop = rng.uniform(55, 85)
    z_lo = z_first - 11 * pitch - drop - 20
    sl = grid.box((-220, -200, z_lo), (220, 200, z_first + 20))
    if sl[2].stop <= sl[2].start:
        return
    x, y, z = grid.sub(sl)
    zz = z1[sl[2]][None, None, :]
    A = np.interp(zz, z1, a_c) + 3.0
    B = np.where(y > 0, np.interp(zz, z1, ba_c), np.interp(zz, z1, bp_c)) + 3.0
    p = np.where(y > 0, p_ant, 2.4)
    s = (np.abs(x / A) ** p + np.abs(y / B) ** p) ** (1.0 / p)
    r = np.sqrt(x**2 + y**2)
    d_r = r - r / np.maximum(s, 1e-3)
    phi = np.abs(np.arctan2(x, -y)) / np.pi  # 0 posterior (spine), 1 anterior
    fall = drop * phi**1.4
    k = np.clip(np.rint((z_first - (z + fall)) / pitch), 0, 11)
    z_c = z_first - k * pitch - fall
    phi_max = np.array([0.78] * 7 + [0.74, 0.7, 0.64, 0.45, 0.33])[k.astype(int)]
    tr, tz = 5.5, 7.0
    q = (d_r / tr) ** 2 + ((z - z_c) / tz) ** 2
    along = (phi > 0.17) & (phi < phi_max)
    _paint(labels, sl, (q < 1) & along, "cortical_bone")
    _paint(labels, sl, (q < 0.3) & along, "trabecular_bone")
    # posterior necks: from the transverse process out to where the arc starts
    ang = 0.17 * np.pi
    dx, dy = math.sin(ang), -math.cos(ang)
    for kk in range(12):
        zr = z_first - kk * pitch
        yv = float(y_spine(np.array([zr]))[0])
        A0 = float(np.interp(zr, z1, a_c)) + 3.0
        B0 = float(np.interp(zr, z1, bp_c)) + 3.0
        rr = 1.0 / ((abs(dx) / A0) ** 2.4 + (abs(dy) / B0) ** 2.4) ** (1.0 / 2.4)  # arc start on the outline
        for side in (1, -1):
            _rod(grid, labels, (side * 22, yv - 22, zr), (side * rr * dx, rr * dy, zr - drop * 0.17**1.4), 5.5, t_sh)


def _arms(grid, labels, S, outline, p_body, frame, fat_mm, t_sh, trunk) -> dict:
    """Arms down beside the trunk: upper arm with humerus, elbow, forearm with radius and ulna.

    Each arm is a lean (muscle) tube in a subcutaneous fat layer whose outer surface is the skin
    line, bones as cortical shell around marrow; its cross-section in every axial slice is a disc.
    Below the axilla the arm's axis follows the trunk at the sampled air gap: per slice, the
    trunk's lateral extent in the rows of the arm (read from the label map, so the outline's
    wobble counts) plus the arm's radius plus the gap, smoothed (running maximum, then running
    mean over about 60 mm) so the gap is nowhere smaller than sampled. "Touching" arms are placed
    6 mm into the trunk outline and, painted only into air, rest against it along their length.
    Above the axilla the arm is vertical and a deltoid pad joins the shoulder to the trunk.
    Anything outside the field of view is clipped.
    """
    geo = S["arm_geometry"]
    z1 = grid.Z[0, 0]
    gap = (S["arm_gap_mm"] if S["arms_mode"] == "separate" else -6.0) / grid.scale
    y, z_sh = geo["y"], geo["z_shoulder"]
    z_el = z_sh - geo["upper"]
    z_wr = z_el - geo["fore"]
    z_ax = z_sh - 50.0  # axilla: above it the shoulder joins the trunk
    fat = max(2.0, 0.7 * fat_mm)
    gi = geo["girth"] * frame
    # outer radius per slice: shoulder 38, elbow 31 / 31, wrist 22 (x girth) plus fat; round ends
    r = np.interp(z1, [z_wr, z_el - 1e-6, z_el, z_ax, z_sh], [22 * gi + 0.6 * fat, 31 * gi + 0.8 * fat, 31 * gi + fat, 38 * gi + fat, 38 * gi + fat])
    r_fat = np.where(z1 < z_el, 0.8 * fat, fat)
    cap_top, cap_bot = z_sh + 10.0 - r, z_wr - 10.0 + r
    r = np.sqrt(np.clip(r**2 - np.clip(z1 - cap_top, 0, None) ** 2 - np.clip(cap_bot - z1, 0, None) ** 2, 0.0, None))
    in_arm = (z1 > z_wr - 10.0) & (z1 < z_sh + 10.0) & (r > 0)
    if not in_arm.any():
        return {}
    a, b_a, b_p, f_a, f_l, f_p = outline(z1)  # analytic outline: for slices where the band holds no trunk
    b, p = (b_p + f_p, p_body[1]) if y < 0 else (b_a + f_a, p_body[0])
    half = (a + f_l) * np.clip(1.0 - np.abs(y / b) ** p, 0.0, 1.0) ** (1.0 / p)
    r_ref = float(r[in_arm].max())
    band = np.abs(grid.Y - y) < 0.7 * r_ref  # [X, Y, 1]
    win = max(1, round(60.0 / (grid.spacing[2] / grid.scale)))
    k = np.arange(len(z1))
    P: dict = {}
    for side, tag in ((1, "right"), (-1, "left")):
        ext = np.where(trunk & band, side * grid.X, -np.inf).max(axis=(0, 1))
        ext = np.where(np.isfinite(ext), ext, half)
        x_c = np.where((z1 <= z_ax) & in_arm, ext + r + gap, -np.inf)
        x_c = np.array([x_c[max(i - win // 2, 0) : i + win // 2 + 1].max() for i in k])  # running maximum
        x_c = np.where(np.isfinite(x_c), x_c, np.nan)
        x_c = np.array([np.nanmean(x_c[max(i - win // 2, 0) : i + win // 2 + 1]) if np.isfinite(x_c[i]) else np.nan for i in k])
        below = np.flatnonzero(np.isfinite(x_c))
        if below.size == 0:  # only the shoulder is in the field of view: place it from the analytic outline
            x_top = float(half[-1] + r_ref + gap) if z1[-1] < z_ax else float(np.interp(z_ax, z1, half)) + r_ref + gap
        else:
            x_top = float(x_c[below[-1]])
        P[f"arm_{tag}_x_mm"] = x_top * grid.scale
        x_c = np.where(z1 > z_ax, x_top, x_c)
        x_c = np.where(in_arm, x_c, np.nan)
        xs = x_c[in_arm]
        sl = grid.box((side * (np.nanmin(xs) - r_ref - 1) if side > 0 else -(np.nanmax(xs) + r_ref + 1), y - r_ref - 1, z_wr - 10.0),
                      (np.nanmax(xs) + r_ref + 1 if side > 0 else -(np.nanmin(xs) - r_ref - 1), y + r_ref + 1, z_sh + 10.0))  # fmt: skip
        if any(s_.stop <= s_.start for s_ in sl):
            continue
        x, yy, _ = grid.sub(sl)
        xc, rr, rf = (v[sl[2]][None, None, :] for v in (x_c, r, r_fat))
        with np.errstate(invalid="ignore"):
            d = np.sqrt((side * x - xc) ** 2 + (yy - y) ** 2)
            d = np.where(np.isfinite(d), d, np.inf)
        view = labels[sl]
        arm = (d < rr) & (view == 0)
        view[arm] = LABELS["fat"]
        view[arm & (d < rr - rf)] = LABELS["muscle"]
        # bones: humerus (shaft to 12 mm above the elbow), radius and ulna in the forearm
        zz = z1[sl[2]][None, None, :]
        t_c = max(t_sh, 3.5)
        own = arm & (view != LABELS["background"])
        hum = (zz > z_el + 12) & (zz < z_sh)
        r_h = 11.0 * gi
        view[own & hum & (d < r_h)] = LABELS["cortical_bone"]
        view[own & hum & (d < r_h - t_c)] = LABELS["trabecular_bone"]
        fore = (zz < z_el - 10) & (zz > z_wr + 10)
        for dy in (9.0, -9.0):
            d2 = np.sqrt((side * x - xc) ** 2 + (yy - y - dy * gi) ** 2)
            view[own & fore & (d2 < 6.5 * gi)] = LABELS["cortical_bone"]
            view[own & fore & (d2 < 6.5 * gi - t_c)] = LABELS["trabecular_bone"]
        # deltoid pad over the shoulder joint, reaching the trunk above the axilla; humeral head
        r0 = 38.0 * gi + fat
        c = (side * (x_top - 0.3 * (r0 + max(gap, 0.0))), y, z_sh - 5.0)
        sl, f = _ellipsoid(grid, c, (r0 + 0.5 * max(gap, 0.0) + 10.0, r0, 48.0))
        view = labels[sl]
        pad = (f < 1) & (view == 0) & (grid.sub(sl)[2] > z_ax)
        view[pad] = LABELS["fat"]
        view[pad & (f < 0.55)] = LABELS["muscle"]
        _bone_ellipsoid(grid, labels, (side * x_top, y, z_sh), (22, 22, 22), (0, 0, 0), t_c, only=("fat", "muscle"))
    P["arm_y_mm"] = y * grid.scale
    return P


# --------------------------------------------------------------------------------------------
# Head anatomy
# --------------------------------------------------------------------------------------------


def _head_anatomy(rng: np.random.Generator, grid: _Grid):
    shape = grid.shape
    labels = np.zeros(shape, dtype=np.int16)
    X, Y, Z = grid.X, grid.Y, grid.Z
    t_sh = _shell_t(grid.spacing)
    sn, gyr = _smooth_noise(rng, shape, grid.spacing, 30.0)[0], _smooth_noise(rng, shape, grid.spacing, 7.0)[0]
    s = rng.normal(1.0, 0.04)
    P = {"head_scale": s}

    # --- outer head: cranium + face + nose + neck
    cr_c = np.array([0.0, -5.0, 35.0])
    cr_ax = np.array([78.0, 98.0, 80.0]) * s * rng.uniform(0.96, 1.04, 3)
    scalp = rng.uniform(4, 7)
    sl, f_cr = _ellipsoid(grid, cr_c, cr_ax)
    _paint(labels, sl, f_cr < 1 + 0.02 * sn[sl], "fat")
    neck_r = np.array([55.0, 58.0]) * s * rng.uniform(0.92, 1.08)
    sl = grid.box((-80, -90, -400), (80, 80, -40 * s))
    x, y, z = grid.sub(sl)
    fn = (x / neck_r[0]) ** 2 + ((y + 8) / neck_r[1]) ** 2
    _paint(labels, sl, np.broadcast_to(fn < 1, labels[sl].shape) & (z < -40 * s), "fat")
    _paint(labels, sl, np.broadcast_to(fn < ((neck_r[0] - 7) / neck_r[0]) ** 2, labels[sl].shape) & (z < -40 * s), "muscle")
    face_c, face_ax = (0.0, 22.0 * s, -35.0 * s), np.array([60.0, 78.0, 62.0]) * s
    sl, f = _ellipsoid(grid, face_c, face_ax)
    _paint(labels, sl, f < 1, "fat", only=("background", "fat"))  # the neck's muscle stays
    sl, f = _ellipsoid(grid, face_c, face_ax - 6)
    _paint(labels, sl, f < 1, "muscle")
    sl, f = _ellipsoid(grid, (0, 93 * s, -15 * s), (12, 20, 26), (-20, 0, 0))
    _paint(labels, sl, f < 1, "soft_tissue")
    for side in (1, -1):  # temporalis muscles
        sl, f = _ellipsoid(grid, (side * (cr_ax[0] - scalp - 4), 10, 20), (8, 35, 30))
        _paint(labels, sl, f < 1, "muscle")

    # --- skull: outer table, diploe, inner table, above a skull base that steps down posteriorly
    t_skull = rng.uniform(6, 9)
    sk_o = cr_ax - scalp
    sk_i = sk_o - t_skull
    def z_base(y):  # noqa: E306
        return np.interp(y, [-120, -25, -10, 20, 35, 120], [-38, -38, -12, -12, 16, 16]) * s
    sl, fo = _ellipsoid(grid, cr_c, sk_o)
    _, fi = _ellipsoid(grid, cr_c, sk_i, box_r=max(sk_o))
    _, fd_o = _ellipsoid(grid, cr_c, sk_o - min(2.0, t_skull / 3) - 0.5 * t_sh, box_r=max(sk_o))
    _, fd_i = _ellipsoid(grid, cr_c, sk_i + min(2.0, t_skull / 3) + 0.5 * t_sh, box_r=max(sk_o))
    x, y, z = grid.sub(sl)
    zb = z_base(y)
    vault = z > zb - 8
    _paint(labels, sl, (fo < 1) & (fi >= 1) & vault, "cortical_bone")
    _paint(labels, sl, (fd_o < 1) & (fd_i >= 1) & vault, "trabecular_bone")
    intracranial = (fi < 1) & (z > zb)
    _paint(labels, sl, (fi < 1) & (z <= zb) & (z > zb - 8), "cortical_bone")
    _paint(labels, sl, (fi < 1) & (z <= zb - 2.5) & (z > zb - 6), "trabecular_bone")
    _paint(labels, sl, intracranial, "csf")
    _paint(labels, sl, (fo < 1) & (z <= zb - 8), "muscle", only=("fat",))

    # --- brain: cerebrum with folded cortex, falx, ventricles, deep nuclei; cerebellum; brainstem
    br_ax = sk_i - rng.uniform(2, 4)
    sl_b, fb = _ellipsoid(grid, cr_c, br_ax)
    x, y, z = grid.sub(sl_b)
    inside = (fb < 1) & (z > z_base(y) + 2) & intracranial[tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(sl_b, sl))]
    g = gyr[sl_b]

    def cortex(depth):
        """Folded cortex from depth below a brain surface (mm): gyri where the field is near zero,
        CSF-filled sulci along its zero set, grey matter lining both."""
        grey = (depth < 3.0) | ((np.abs(g) < 0.5) & (depth < 16))
        return inside & grey, inside & (np.abs(g) < 0.12) & (depth < 13)

    _paint(labels, sl_b, inside, "white_matter")
    grey, sulcus = cortex((1 - np.sqrt(np.minimum(fb, 1))) * float(np.mean(br_ax)))
    _paint(labels, sl_b, grey, "grey_matter")
    _paint(labels, sl_b, sulcus, "csf")
    # interhemispheric fissure: a wavy sheet down to the corpus callosum, with its own medial cortex
    callosal = ((y - cr_c[1] + 5) / 50.0) ** 2 + ((z - cr_c[2] + 5) / 22.0) ** 2 < 1
    mid = np.abs(x - 2.0 * sn[sl_b]) - 0.5 * grid.spacing[0]
    grey, sulcus = cortex(np.where(callosal, 1e3, mid))
    _paint(labels, sl_b, grey, "grey_matter")
    _paint(labels, sl_b, sulcus | (inside & ~callosal & (mid < 0)), "csf")
    for side in (1, -1):
        sl, f = _ellipsoid(grid, (side * 20, 5, 30), (8, 16, 10) * rng.uniform(0.9, 1.1, 3))  # putamen/caudate
        _paint(labels, sl, f < 1, "grey_matter", only=("white_matter", "grey_matter", "csf"))
        sl, f = _ellipsoid(grid, (side * 10, -15, 26), (9, 14, 9))  # thalamus
        _paint(labels, sl, f < 1, "grey_matter", only=("white_matter", "grey_matter", "csf"))
        v_ax = np.array([7.0, 32.0, 9.0]) * rng.uniform(0.7, 1.3, 3)
        sl, f = _ellipsoid(grid, (side * 11, -5, 44), v_ax, (rng.normal(-10, 4), 0, side * 5))
        _paint(labels, sl, f < 1, "csf", only=("white_matter", "grey_matter"))
    sl, f = _ellipsoid(grid, (0, -9, 26), (2.5, 14, 8))
    _paint(labels, sl, f < 1, "csf", only=("white_matter", "grey_matter"))
    cb_c, cb_ax = (0, -52 * s, -18 * s), np.array([50.0, 30.0, 22.0]) * s * rng.uniform(0.92, 1.08, 3)
    sl, f = _ellipsoid(grid, cb_c, cb_ax + 2.5)
    _paint(labels, sl, f < 1, "csf", only=("white_matter", "grey_matter"))
    sl, f = _ellipsoid(grid, cb_c, cb_ax)
    _paint(labels, sl, (f < 1) & (np.abs(gyr[sl]) > 0.1), "cerebellum", only=("csf", "white_matter", "grey_matter"))
    sl, d, _ = _segment(grid, (0, -16 * s, 25 * s), (0, -25 * s, -60 * s), 12)
    _paint(labels, sl, d < 11, "brainstem", only=("csf", "white_matter", "grey_matter", "cerebellum", "cortical_bone", "trabecular_bone", "muscle"))

    # --- orbits and eyes
    for side in (1, -1):
        oc = (side * 32 * s, 62 * s, 2 * s)
        sl, f = _ellipsoid(grid, oc, (21, 22, 19))
        _, fi2 = _ellipsoid(grid, oc, (18, 19, 16), box_r=22)
        x, y, z = grid.sub(sl)
        _paint(labels, sl, (f < 1) & (fi2 >= 1) & (y < oc[1] + 8), "cortical_bone")
        _paint(labels, sl, fi2 < 1, "fat")
        sl, f = _ellipsoid(grid, (oc[0], oc[1] + 7, oc[2]), (12, 12, 12))
        _paint(labels, sl, f < 1, "eye")
    # --- paranasal sinuses (air) in bony walls, nasal cavity with turbinates, mastoid cells
    air_cells = gyr > 0.0
    sinuses = [
        ((0, 86 * s, 26 * s), (22, 10, 15), (13, 4.5, 9)),  # frontal
        ((0, 15 * s, -15 * s), (18, 18, 14), (12, 12, 10)),  # sphenoid
        ((30 * s, 50 * s, -26 * s), (19, 24, 21), (15, 20, 18)),  # maxillary right
        ((-30 * s, 50 * s, -26 * s), (19, 24, 21), (15, 20, 18)),  # maxillary left
    ]
    for c, bone_ax, air_ax in sinuses:
        sl, f = _ellipsoid(grid, c, np.array(bone_ax) * rng.uniform(0.9, 1.1))
        _paint(labels, sl, f < 1, "cortical_bone")
        sl, f = _ellipsoid(grid, c, np.array(air_ax) * rng.uniform(0.8, 1.1, 3))
        _paint(labels, sl, f < 1, "sinus")
    sl, f = _ellipsoid(grid, (0, 55 * s, 4 * s), (11, 18, 12))  # ethmoid air cells
    _paint(labels, sl, f < 1, "trabecular_bone")
    _paint(labels, sl, (f < 1) & air_cells[sl], "sinus")
    sl, f = _ellipsoid(grid, (0, 55 * s, -22 * s), (11, 36, 20))  # nasal cavity
    _paint(labels, sl, f < 1, "sinus")
    _paint(labels, sl, (f < 1) & (gyr[sl] > 0.6), "soft_tissue")
    for side in (1, -1):
        sl, f = _ellipsoid(grid, (side * 50 * s, -30 * s, -28 * s), (12, 13, 12))
        _paint(labels, sl, f < 1, "trabecular_bone")
        _paint(labels, sl, (f < 1) & air_cells[sl], "sinus")
    # --- hard palate, upper and lower dental arches, mandible, pharynx
    sl = grid.box((-32, 5, -48 * s), (32, 80, -38 * s))
    x, y, z = grid.sub(sl)
    _paint(labels, sl, ((x / 30) ** 2 + ((y - 10) / 70) ** 2 < 1) & (y > 10) & (z > -47 * s) & (z < -40 * s), "cortical_bone")
    for zt, zb2, ax in ((-44.0, -56.0, (30.0, 48.0)), (-58.0, -70.0, (36.0, 52.0))):
        sl = grid.box((-60, -10, zt * s - 12), (60, 90, zb2 * s + 12))
        x, y, z = grid.sub(sl)
        ang = np.arctan2(x / ax[0], (y - 30 * s) / ax[1])
        ring = np.abs(np.sqrt((x / ax[0]) ** 2 + ((y - 30 * s) / ax[1]) ** 2) - 1) * ax[0]
        _paint(labels, sl, (ring < 5) & (np.abs(ang) < 1.9) & (z < zt * s) & (z > zb2 * s), "cortical_bone")
    mand = np.array([48.0, 64.0]) * s * rng.uniform(0.94, 1.06)
    sl = grid.box((-70, -30, -100 * s), (70, 100, -62 * s))
    x, y, z = grid.sub(sl)
    rr = np.sqrt((x / mand[0]) ** 2 + ((y - 8 * s) / mand[1]) ** 2)
    ang = np.abs(np.arctan2(x, y - 8 * s))
    dz = (z + 80 * s) / 12.0
    fo = ((rr - 1) * mand[0] / 6.0) ** 2 + dz**2
    fi = ((rr - 1) * mand[0] / max(6.0 - t_sh, 0.5)) ** 2 + (dz * 12 / max(12 - t_sh, 0.5)) ** 2
    _bone(labels, sl, np.where(ang < 1.75, fo, 2.0), np.where(ang < 1.75, fi, 2.0))
    for side in (1, -1):
        _rod(grid, labels, (side * mand[0] * 0.98, 5 * s, -80 * s), (side * mand[0] * 0.92, -5 * s, -30 * s), 6.5, t_sh)
    sl, d, _ = _segment(grid, (0, 28 * s, -30 * s), (0, 22 * s, -300), 9)
    _paint(labels, sl, d < rng.uniform(6, 9), "airway")
    # --- salivary glands: parotids behind the mandibular rami, submandibular glands
    for side in (1, -1):
        sl, f = _ellipsoid(grid, (side * 52 * s, -2 * s, -45 * s), (11, 18, 24))
        _paint(labels, sl, f < 1 + 0.1 * sn[sl], "salivary_gland", only=("muscle", "fat"))
        sl, f = _ellipsoid(grid, (side * 33 * s, 30 * s, -88 * s), (11, 12, 10))
        _paint(labels, sl, f < 1, "salivary_gland", only=("muscle", "fat"))
    # --- cervical spine below the skull base
    _spine(
        grid, labels, z_top=-48.0 * s, z_bottom=-400.0, y_of_z=lambda z: np.full_like(z, -10.0 * s),
        rx_of_z=lambda z: np.full_like(z, 10.0 * s), ry_of_z=lambda z: np.full_like(z, 8.5 * s),
        pitch=17.0 * s, disc=4.0 * s, t=min(t_sh, 2.5), scale=0.6, canal_r=6.5,
    )  # fmt: skip
    head = np.zeros(shape, bool)
    sl, f = _ellipsoid(grid, cr_c, cr_ax)
    head[sl] |= f < 1 + 0.02 * sn[sl]
    sl, f = _ellipsoid(grid, face_c, face_ax)
    head[sl] |= f < 1
    sl, f = _ellipsoid(grid, (0, 93 * s, -15 * s), (12, 20, 26), (-20, 0, 0))
    head[sl] |= f < 1
    head |= ((X / neck_r[0]) ** 2 + ((Y + 8) / neck_r[1]) ** 2 < 1) & (Z < -40 * s)
    labels[~head] = 0
    return labels, P


# --------------------------------------------------------------------------------------------
# Lesions
# --------------------------------------------------------------------------------------------

_HEAD_LESION_HOSTS = {"white_matter": 0.6, "grey_matter": 0.3, "cerebellum": 0.1}
#: Lesions centred in a host of this table may spread into the listed neighbouring tissues
#: (a lesion at the cortex is also in the trabecular bone beside it).
_LESION_SPREAD = {"cortical_bone": ("cortical_bone", "trabecular_bone")}


def _add_lesions(
    rng, grid: _Grid, labels: np.ndarray, hosts: dict[str, float], n: int, diameter_mm=((5.0, 30.0),), allowed: np.ndarray | None = None
) -> list[dict]:
    """``n`` spheroid lesions in ``hosts`` (name -> probability); diameters (image mm) from the
    ranges ``diameter_mm``; centres only where ``allowed`` (default: anywhere in the host)."""
    lesions: list[dict] = []
    host_mask = (lambda hid: labels == hid) if allowed is None else (lambda hid: (labels == hid) & allowed)
    names = [h for h in hosts if hosts[h] > 0 and np.any(host_mask(LABELS[h]))]
    if not names or n == 0:
        return lesions
    prob = np.array([hosts[h] for h in names])
    prob /= prob.sum()
    spacing = np.asarray(grid.spacing)
    half = (np.asarray(grid.shape) - 1) / 2
    for k in range(n):
        host = names[rng.choice(len(names), p=prob)]
        host_id = LABELS[host]
        idx = np.flatnonzero(host_mask(host_id).ravel())
        if idx.size == 0:
            continue
        spread = [LABELS[h] for h in _LESION_SPREAD.get(host, (host,))]
        diam = _draw(rng, diameter_mm)
        ax = 0.5 * diam * rng.uniform(0.85, 1.15, 3)
        if grid.scale != 1.0:
            ax = ax / grid.scale  # anatomy units
        rot = rng.uniform(-90, 90, 3)
        best = None
        place = _child(rng)  # how many candidates are tried depends on the grid
        for _ in range(12):  # keep the candidate centre whose spheroid lies most inside the host
            ijk = np.array(np.unravel_index(idx[place.integers(idx.size)], grid.shape))
            centre_w = (ijk - half) * spacing + place.uniform(-0.4, 0.4, 3) * spacing
            c = _world_to_anat(grid, centre_w)
            sl, f = _ellipsoid(grid, c, ax, rot)
            inside = f < 1
            view = labels[sl]
            n_in = int(np.sum(inside & (view == host_id if len(spread) == 1 else np.isin(view, spread))))
            frac = n_in / max(int(inside.sum()), 1)
            if best is None or frac > best[0]:
                best = (frac, ijk, centre_w, sl, inside)
            if frac > 0.9:
                break
        frac, ijk, centre_w, sl, inside = best
        lid = LESION_ID_START + k
        view = labels[sl]
        view[inside & (view == host_id if len(spread) == 1 else np.isin(view, spread))] = lid
        labels[tuple(ijk)] = lid  # at least the centre voxel, however small the lesion
        lesions.append({"id": lid, "organ": host, "centre_mm": tuple(float(v) for v in centre_w), "diameter_mm": diam})
    for les in lesions:
        les["n_voxels"] = int(np.sum(labels == les["id"]))
    return lesions


def _world_to_anat(grid: _Grid, w) -> np.ndarray:
    x, y = w[0], w[1]
    a = np.array([grid.c * x + grid.s * y - grid.shift[0], -grid.s * x + grid.c * y - grid.shift[1], w[2] - grid.shift[2]])
    return a if grid.scale == 1.0 else a / grid.scale


# --------------------------------------------------------------------------------------------
# Images from labels
# --------------------------------------------------------------------------------------------


def _lut(values: dict[int, float]) -> np.ndarray:
    lut = np.zeros(_N_LABEL_SLOTS, dtype=np.float32)
    for k, v in values.items():
        lut[k] = v
    return lut


def _lesion_hu(rng, host: str, hu: dict[str, float]) -> float:
    if host == "liver":
        return hu["liver"] - rng.uniform(15, 35)  # hypodense metastasis
    if host in ("lung", "fat"):
        return rng.uniform(20, 45)  # solid nodule
    if host in ("trabecular_bone", "cortical_bone"):
        return rng.uniform(80, 180) if rng.random() < 0.5 else rng.uniform(550, 900)  # lytic / sclerotic
    if host in ("white_matter", "grey_matter", "cerebellum"):
        return rng.uniform(28, 42)
    return hu[host] + rng.uniform(-10, 5)


#: Tissues a subject's ``soft_hu_offset`` shifts (water- and fat-like); bones take ``bone_hu_scale``.
_SOFT_HU_TISSUES = (
    "fat", "muscle", "soft_tissue", "myocardium", "blood_pool", "liver", "spleen", "kidney_right", "kidney_left",
    "bladder", "brown_fat",
)  # fmt: skip
#: Nominal share of the bowel in the torso's soft-tissue voxels (measured over training subjects);
#: the configured FDG soft-tissue mean is base x (share x bowel_uptake + 1 - share), so the bowel
#: sits near bowel_uptake x base and the other soft tissue near base.
_BOWEL_SHARE = 0.6


def _images(rng, grid: _Grid, labels, tissues, lesions, weight_kg, subject: dict | None = None, masks: dict | None = None):
    """CT, MR and activity from labels. ``subject`` (torso only): the sampled parameters of
    :func:`_sample_torso` that modify tissue values, FDG uptake and lesion uptake; ``masks``:
    ``bowel`` voxels. Without them (head) every value comes from the module tables."""
    shape, spacing = grid.shape, grid.spacing
    names = [LABEL_NAMES[t] for t in tissues]
    hu = {n: float(rng.uniform(*HU_RANGES[n])) for n in names}
    if subject is not None:
        for n in names:
            if n in _SOFT_HU_TISSUES:
                hu[n] += subject["soft_hu_offset"]
            elif n in ("cortical_bone", "trabecular_bone"):
                hu[n] *= subject["bone_hu_scale"]
    for les in lesions:
        les["hu"] = _lesion_hu(rng, les["organ"], hu)
    hu_by_id = {LABELS[n]: v for n, v in hu.items()} | {les["id"]: les["hu"] for les in lesions}
    # texture fields only shape intensities (never labels), so float32 is enough
    fields = _smooth_noise(rng, shape, spacing, 18.0, 2).astype(np.float32)
    vessels = _smooth_noise(rng, shape, spacing, 12.0, 2).astype(np.float32)
    bias = _smooth_noise(rng, shape, spacing, 160.0, 1)[0].astype(np.float32)
    tex, tex2 = fields
    lung = labels == LABELS["lung"]
    # CT: table value + tissue texture; lungs: vessels (intersections of two noise zero-sets are
    # curvilinear, vessel-like) denser towards the hilum, gravity gradient posteriorly
    ct = _lut(hu_by_id)[labels]
    ct += np.where(labels == LABELS["trabecular_bone"], 40.0, 4.0).astype(np.float32) * tex
    ct += np.where(labels == LABELS["cortical_bone"], 60.0, 0.0).astype(np.float32) * tex2
    vessel = np.exp(-(vessels[0] ** 2 + vessels[1] ** 2) / (2 * 0.2**2)).astype(np.float32)
    x, y, z = (a.astype(np.float32) for a in (grid.X, grid.Y, grid.Z))
    hilum = np.clip(1.2 - np.sqrt(x**2 + (y - 10) ** 2 + (z - 100) ** 2) / 160.0, 0.2, 1.0)
    lung_tex = 750.0 * vessel * hilum + 25.0 * tex - 30.0 * np.clip(y / 100.0, -1, 1)
    ct[lung] += lung_tex[lung]
    density = np.clip(ct + 1000.0, 0.0, None)  # noise-free, so activity never copies CT noise
    ct_sigma = float(rng.uniform(10, 20))
    noise = _child(rng).standard_normal(shape, dtype=np.float32)
    # mild in-plane correlation, rescaled to the sampled std: CT noise is not white
    noise = 0.6 * noise + 0.2 * (np.roll(noise, 1, 0) + np.roll(noise, 1, 1))
    noise *= ct_sigma / float(noise.std())
    ct = (ct + noise).astype(np.float32)
    np.maximum(ct, -1024.0, out=ct)

    # MR T1: table x per-subject contrast jitter, lesions darker than host, bias field, Rician noise
    t1 = {LABELS[n]: MR_T1[n] * float(rng.uniform(0.92, 1.08)) for n in names}
    # lesions darker than their host; a nodule in fat has the signal of soft tissue, not of fat
    t1 |= {les["id"]: t1[LABELS["muscle" if les["organ"] == "fat" else les["organ"]]] * float(rng.uniform(0.6, 0.85)) for les in lesions}
    mr = _lut(t1)[labels] * (1.0 + 0.03 * tex)
    mr[lung] *= 1.0 + 3.0 * vessel[lung]
    mr *= np.exp(0.15 * bias).astype(np.float32)
    mr_sigma = float(rng.uniform(0.015, 0.035))
    mr_rng = _child(rng)
    n1 = mr_rng.standard_normal(shape, dtype=np.float32) * mr_sigma
    n2 = mr_rng.standard_normal(shape, dtype=np.float32) * mr_sigma
    mr = np.sqrt((mr + n1) ** 2 + n2**2).astype(np.float32)

    # Activity: SUV per organ (sampled), smooth texture normalised to mean 1 per organ
    injected = {  # children (below 50 kg): FDG down to 26 MBq, the bone agent scaled with weight
        "FDG": float(np.clip(weight_kg * rng.uniform(3.0, 4.0) * 1e6, 150e6 if weight_kg >= 50.0 else 26e6, 450e6)),
        "Tc99m-agent": float(rng.uniform(550e6, 925e6)) * min(1.0, weight_kg / 50.0),
        "Lu177-agent": float(7.4e9 * rng.uniform(0.9, 1.1)),
    }
    uptake_time = {t: float(rng.uniform(*UPTAKE_TIME_S[t])) for t in TRACERS}
    flat = labels.ravel().astype(np.int64)
    counts = np.bincount(flat, minlength=_N_LABEL_SLOTS)
    activity, organ_uptake = {}, {}
    myo = labels == LABELS["myocardium"]
    bowel = None if masks is None else masks.get("bowel")
    for tracer in TRACERS:
        suv = {LABELS[n]: float(rng.uniform(*SUV_RANGES[tracer][n])) for n in names if n != "background"}
        if subject is not None and tracer == "FDG":
            suv[LABELS["lung"]] = subject["lung_suv"]
            suv[LABELS["myocardium"]] = subject["myocardium_suv"]
            suv[LABELS["bladder"]] = subject["bladder_suv"]
            if subject["brown_fat"]:
                suv[LABELS["brown_fat"]] = subject["brown_fat_suv"]
            suv[LABELS["soft_tissue"]] *= _BOWEL_SHARE * subject["bowel_uptake"] + 1.0 - _BOWEL_SHARE
        for les in lesions:
            host_suv = suv[LABELS[les["organ"]]]
            if tracer == "Tc99m-agent":
                if subject is None:
                    ratio = TC_BONE_LESION_RATIO if "bone" in les["organ"] else TC_SOFT_LESION_RATIO
                    s_les = host_suv * float(rng.uniform(*ratio))
                else:
                    s_les = host_suv * _draw(rng, subject["lesion_ratio_tc_bone" if "bone" in les["organ"] else "lesion_ratio_tc_soft"])
            elif subject is None:
                lo, hi = LESION_SUV[tracer]
                s_les = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            else:
                s_les = _draw_log(rng, subject["lesion_suv_fdg" if tracer == "FDG" else "lesion_suv_lu177"])
            les.setdefault("suv", {})[tracer] = s_les
            les.setdefault("uptake_ratio", {})[tracer] = s_les / host_suv if host_suv > 0 else float("inf")
            suv[les["id"]] = s_les
        scale = injected[tracer] / (weight_kg * 1000.0)  # Bq/mL per SUV unit
        w = np.exp(0.08 * (tex if tracer != "Lu177-agent" else tex2)).astype(np.float32)
        w[myo] = np.exp(0.3 * tex2[myo])
        w[lung] = density[lung] + 1.0
        if bowel is not None and tracer == "FDG":  # bowel: segmental, patchy uptake relative to the other soft tissue
            w[bowel] *= subject["bowel_uptake"] * np.exp(0.35 * tex2[bowel])
        if subject is not None and subject["brown_fat"] and tracer == "FDG":
            bf = labels == LABELS["brown_fat"]
            w[bf] = np.exp(0.4 * tex2[bf])
        w[labels >= LESION_ID_START] = 1.0
        mean_w = np.bincount(flat, weights=w.ravel().astype(np.float64), minlength=_N_LABEL_SLOTS) / np.maximum(counts, 1)
        mean_w[mean_w == 0] = 1.0
        conc = {k: v * scale for k, v in suv.items()}
        act = (_lut(conc)[labels] * (w / mean_w[labels].astype(np.float32))).astype(np.float32)
        activity[tracer] = act
        organ_uptake[tracer] = {LABEL_NAMES[k]: v for k, v in conc.items() if k < LESION_ID_START}
    return ct, mr, activity, organ_uptake, injected, uptake_time, {"ct_noise_hu": ct_sigma, "mr_noise": mr_sigma, "hu": hu}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _affine(shape, spacing) -> np.ndarray:
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = -0.5 * np.asarray(spacing) * (np.asarray(shape) - 1)
    return aff


def _start(seed, shape, spacing_mm, n_lesions, weight_kg: Ranges | None = None):
    """Validate the arguments and draw the subject's weight (the first number of every subject):
    50-110 kg (head), or from the family's ``weight_kg`` ranges (torso)."""
    shape, spacing = _check_inputs(seed, shape, spacing_mm)
    lo, hi = _check_n_lesions(n_lesions)
    rng = np.random.default_rng(seed)
    weight = float(rng.uniform(50.0, 110.0)) if weight_kg is None else _draw(rng, weight_kg)
    return shape, spacing, lo, hi, rng, weight


def _check_variety(variety) -> TorsoVariety:
    if isinstance(variety, TorsoVariety):
        return variety
    if isinstance(variety, str) and variety in VARIETIES:
        return VARIETIES[variety]
    raise ValueError(f"variety must be one of {sorted(VARIETIES)} or a TorsoVariety, got {variety!r}")


def _check_arms(arms):
    if arms is None or isinstance(arms, bool) or (isinstance(arms, str) and arms in ARMS_MODES):
        return arms
    raise ValueError(f"arms must be None (drawn from the variety), True, False or one of {ARMS_MODES}, got {arms!r}")


def make_torso_phantom(
    seed: int | Sequence[int],
    shape: Sequence[int] = (128, 128, 96),
    spacing_mm: Sequence[float] = (4.0, 4.0, 4.0),
    *,
    n_lesions: int | tuple[int, int] = (1, 8),
    arms: bool | str | None = None,
    variety: str | TorsoVariety = "training",
) -> Phantom:
    """A procedural torso (neck base to upper thighs) from ``seed``, drawn from a family of subjects.

    Args:
        seed: int or sequence of ints (e.g. ``[data_seed, index]``) for ``numpy.random.default_rng``.
        shape: (X, Y, Z) voxels, each >= 16. The default 128 x 128 x 96 at 4 mm covers 512 x 512 x 384 mm.
        spacing_mm: voxel size (mm), each > 0. Anatomy is defined in mm, so any spacing works; an
            adult's anatomy spans about z = -200..+230 mm around the volume centre, a child's less.
        n_lesions: number of lesions, or an inclusive (min, max) range sampled per subject.
        arms: ``None`` draws the arm position from the family (separate with an air gap, touching
            the trunk, or raised out of the field of view); ``True`` forces arms down beside the
            body (separate or touching, drawn with the family's odds), ``False`` forces them raised;
            ``"separate"``, ``"touching"`` or ``"raised"`` forces that position. Every other
            parameter of the subject is the same whatever ``arms`` says. Arms of large subjects
            may reach beyond the field of view and are clipped.
        variety: the family: ``"training"`` (:data:`TRAINING_VARIETY`, for every training and
            validation set), ``"shifted"`` (:data:`SHIFTED_VARIETY`, out-of-distribution tests
            only) or any :class:`TorsoVariety`.

    Returns:
        :class:`Phantom` with kind ``"torso"``; ``params`` records every sampled value (module docstring).

    Raises:
        ValueError: bad ``seed``, ``shape``, ``spacing_mm``, ``n_lesions``, ``arms`` or ``variety``.
    """
    v = _check_variety(variety)
    arms = _check_arms(arms)
    shape, spacing, lo, hi, rng, weight = _start(seed, shape, spacing_mm, n_lesions, v.weight_kg)
    yaw, shift = rng.normal(0, 2.0), (rng.normal(0, 6), rng.normal(0, 6), rng.normal(0, 8))
    subject = _sample_torso(rng, v, weight, arms)
    grid = _Grid(shape, spacing, yaw_deg=yaw, shift_mm=shift, scale=subject["stature_scale"])
    labels, params, masks = _torso_anatomy(rng, grid, weight, subject)
    lesions = _add_lesions(
        rng, grid, labels, dict(v.lesion_hosts), int(rng.integers(lo, hi + 1)), v.lesion_diameter_mm, allowed=masks["trunk"]
    )
    ranges = {k: getattr(v, k) for k in ("lesion_suv_fdg", "lesion_suv_lu177", "lesion_ratio_tc_bone", "lesion_ratio_tc_soft")}
    recorded = {k: val for k, val in subject.items() if k != "arm_geometry"}
    return _finish("torso", rng, grid, labels, TORSO_LABELS, lesions, weight, recorded | params, subject | ranges, masks)


def make_head_phantom(
    seed: int | Sequence[int],
    shape: Sequence[int] = (128, 128, 128),
    spacing_mm: Sequence[float] = (2.0, 2.0, 2.0),
    *,
    n_lesions: int | tuple[int, int] = (0, 3),
) -> Phantom:
    """A procedural head and upper neck from ``seed``; the default 128^3 at 2 mm covers 256 mm.

    Same arguments and outputs as :func:`make_torso_phantom`; lesions are placed in the brain.
    """
    shape, spacing, lo, hi, rng, weight = _start(seed, shape, spacing_mm, n_lesions)
    grid = _Grid(shape, spacing, yaw_deg=rng.normal(0, 3.0), shift_mm=(rng.normal(0, 3), rng.normal(0, 3), rng.normal(0, 4)))
    labels, params = _head_anatomy(rng, grid)
    lesions = _add_lesions(rng, grid, labels, _HEAD_LESION_HOSTS, int(rng.integers(lo, hi + 1)))
    return _finish("head", rng, grid, labels, HEAD_LABELS, lesions, weight, params)


def _finish(kind, rng, grid, labels, tissues, lesions, weight, params, subject=None, masks=None) -> Phantom:
    ct, mr, activity, organ_uptake, injected, uptake_time, img_params = _images(rng, grid, labels, tissues, lesions, weight, subject, masks)
    names = {t: LABEL_NAMES[t] for t in tissues} | {les["id"]: f"lesion_{les['id'] - LESION_ID_START}" for les in lesions}
    return Phantom(
        labels=labels,
        label_names=names,
        ct_hu=ct,
        mr_t1=mr,
        activity=activity,
        organ_uptake=organ_uptake,
        lesions=lesions,
        weight_kg=weight,
        injected_activity_Bq=injected,
        uptake_time_s=uptake_time,
        spacing_mm=tuple(grid.spacing),
        affine=_affine(grid.shape, grid.spacing),
        kind=kind,
        params=params | img_params,
    )


def _label_cmap():  # pragma: no cover - visual check only
    """Distinct colours per label id (seeded, so every preview uses the same colours)."""
    from matplotlib.colors import ListedColormap

    colours = np.random.default_rng(7).uniform(0.15, 1.0, (_N_LABEL_SLOTS, 3))
    colours[0] = 0.0
    return ListedColormap(colours)


def _save_preview(ph: Phantom, path: str) -> None:  # pragma: no cover - visual check only
    """Montage of coronal / axial / sagittal slices of CT, MR, FDG, Tc, Lu and labels to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sp = np.asarray(ph.spacing_mm)
    half = (np.asarray(ph.labels.shape) - 1) / 2

    def idx(axis, mm):
        return int(np.clip(round(mm / sp[axis] + half[axis]), 0, ph.labels.shape[axis] - 1))

    if ph.kind == "torso":
        cuts = [("cor", 1, 10.0), ("cor", 1, -40.0), ("ax", 2, 120.0), ("ax", 2, 50.0), ("ax", 2, -20.0), ("ax", 2, -90.0), ("ax", 2, -165.0), ("sag", 0, 0.0), ("sag", 0, 60.0)]
    else:
        cuts = [("cor", 1, 0.0), ("cor", 1, 50.0), ("ax", 2, 60.0), ("ax", 2, 30.0), ("ax", 2, 2.0), ("ax", 2, -25.0), ("ax", 2, -80.0), ("sag", 0, 0.0), ("sag", 0, 30.0)]
    rows = [
        ("CT", ph.ct_hu, dict(cmap="gray", vmin=-1000, vmax=1000)),
        ("CT lung", ph.ct_hu, dict(cmap="gray", vmin=-1000, vmax=-400)),
        ("MR", ph.mr_t1, dict(cmap="gray", vmin=0, vmax=float(np.percentile(ph.mr_t1, 99.5)))),
        ("FDG", ph.suv("FDG"), dict(cmap="gray_r", vmin=0, vmax=8)),
        ("Tc", ph.suv("Tc99m-agent"), dict(cmap="gray_r", vmin=0, vmax=8)),
        ("Lu", ph.suv("Lu177-agent"), dict(cmap="gray_r", vmin=0, vmax=8)),
        ("labels", ph.labels.astype(float), dict(cmap=_label_cmap(), vmin=0, vmax=_N_LABEL_SLOTS - 1, interpolation="nearest")),
    ]
    fig, axs = plt.subplots(len(rows), len(cuts), figsize=(2.6 * len(cuts), 2.6 * len(rows)))
    for r, (name, img, kw) in enumerate(rows):
        for c, (kind, axis, mm) in enumerate(cuts):
            i = idx(axis, mm)
            v = np.take(img, i, axis=axis).T
            other = [a for a in range(3) if a != axis]
            ax = axs[r, c]
            ax.imshow(v, origin="lower", aspect=sp[other[1]] / sp[other[0]], **kw)
            ax.set_title(f"{name} {kind} {mm:+.0f}mm", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=55)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover - python -m common.simulation.phantoms OUT_DIR [n]
    import sys
    import time
    from pathlib import Path

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "phantom_previews")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
        for maker in (make_torso_phantom, make_head_phantom):
            t0 = time.perf_counter()
            ph = maker([0, i])
            dt = time.perf_counter() - t0
            print(f"{ph.kind} {i}: {dt:.2f} s, weight {ph.weight_kg:.0f} kg, lesions {len(ph.lesions)}")
            _save_preview(ph, str(out / f"{ph.kind}_{i}.png"))
