"""Simulation: seeded procedural phantoms (:mod:`~common.simulation.phantoms`: anatomy, CT in HU,
MR-like T1, tracer activity in Bq/mL, lesions, labels) and the acquisitions made from them with
the models of :mod:`common.physics` (:mod:`~common.simulation.pet`: PET sinograms with
attenuation, scatter, randoms and Poisson counts, OSEM in SUV; :mod:`~common.simulation.spect`:
SPECT projections at all and at sparse views, OSEM in Bq/mL), plus the dataset-task registry and
its seeded, resumable, shardable writer (:mod:`~common.simulation.datasets`). Every subject draws
from ``numpy.random.default_rng([seed, index])``. A task that serves one bundle registers its
builder in that bundle's package (``bundles/<name>/<name>/dataset.py``); the shared task here is
``spect_projection_completion`` (its bundle is still to come).

Families of subjects. Every training and validation set draws from ``training``; ``shifted``
(``make_dataset --family shifted``) lies beyond it on every row, draws combinations training
never draws, and serves held-out tests only, so each bundle is judged on studies made
differently from its training data. The one table of both families (anatomy and uptake: the
phantom's :class:`~common.simulation.phantoms.TorsoVariety`, recorded in ``Phantom.params``;
acquisition: :data:`~common.simulation.pet.PET_PARAMS` / ``PET_SHIFTED``, recorded in each
subject's datalist entry; a two-number range is sampled uniformly per subject unless marked)::

    =========================  ==========================  ==================================  ========================
    parameter (params key)     training                    shifted                             unit
    =========================  ==========================  ==================================  ========================
    weight (``weight_kg``)     20-150                      15-20 or 150-190                    kg (``Phantom.weight_kg``)
    ``height_scale``           0.94-1.06                   0.88-0.94 or 1.06-1.12              x adult height
    ``adiposity``              0.7-1.3                     0.4-0.7 or 1.3-1.8                  x fat per BMI excess
    ``shoulder_scale``         0.92-1.12                   0.82-0.92 or 1.12-1.22              x upper-chest width
    ``waist_scale``            0.88-1.15                   0.78-0.88 or 1.15-1.28              x abdomen width, depth
    ``aspect_scale``           0.82-1.2                    0.72-0.82 or 1.2-1.4                x AP/lateral (about 0.65)
    ``arms_mode``              separate 0.4, touching      separate 0.5, touching 0.5,         probability
                               0.35, raised 0.25           raised 0
    ``arm_gap_mm``             10-40                       40-80                               mm air (separate arms)
    ``lung_scale``             0.84-1.03                   0.70-0.84                           x ribcage size
    ``lung_apex_mm``           205-240                     185-205 or 240-255                  mm height (anatomy)
    ``diaphragm_mm``           15-65                       -5-15 or 65-85                      mm height, right dome
    ``diaphragm_lr_mm``        0-25                        -20-0 or 25-40                      mm right above left
    ``soft_hu_offset``         -8-8                        -20 - -8 or 8-20                    HU added
    ``bone_hu_scale``          0.82-1.14                   0.68-0.82 or 1.14-1.35              x bone HU
    ``lung_suv``               0.35-0.9                    0.2-0.35 or 0.9-1.8                 FDG SUV
    ``myocardium_high``        probability 0.6             probability 0.5                     -
    ``myocardium_suv``         low 1-2, high 4-12          low 0.5-1, high 12-20               FDG SUV
    ``bladder_fill``           0-1                         1-1.4                               fraction (10-500 mL)
    ``bladder_suv``            5-60                        60-150                              FDG SUV
    ``bowel_uptake``           0.8-3                       3-5                                 x other soft tissue (FDG)
    ``brown_fat``              probability 0.25            probability 1                       -
    ``brown_fat_suv``          3-15                        15-25                               FDG SUV when active
    lesion ``diameter_mm``     4-30                        2.5-4 or 30-45                      mm (nominal)
    lesion ``suv`` FDG         3-20                        1.5-3 or 20-40                      SUV, log-uniform
    lesion ``suv`` Lu177       5-50                        2-5 or 50-100                       SUV, log-uniform
    lesion ``suv`` Tc99m       bone 2-8, other 0.8-1.5     bone 1.2-2 or 8-15,                 x host organ
                                                           other 0.5-0.8 or 1.5-2.5
    lesion ``organ``           liver .22, lung .18,        liver .1, lung .25, trabecular .2,  probability
                               trabecular bone .14,        cortical .15, soft tissue .1,
                               cortical bone .05, soft     spleen .05, kidneys .025 each,
                               tissue .14, spleen .05,     muscle .05, fat .05
                               kidneys .04 each, muscle
                               .08, fat .06
    =========================  ==========================  ==================================  ========================

    acquisition (PET)                      training                        shifted
    =====================================  ==============================  ==============================
    true counts per 4 mm slice             4e5 - 4e6, log-uniform          1.5e5 - 4e5 (down to 13x below
                                           (clinical FDG 2e6, DESIGN 5.1)  the clinical level)
    scanner resolution (PSF FWHM)          4 - 7 mm                        7 - 9 mm
    scatter fraction S / (T + S)           25 - 45 %                       45 - 55 %
    randoms fraction R / (T + S + R)       5 - 25 %                        25 - 35 %
    voxel size (x, y, z) at 4 mm default   4 x 4 x 4, 3.65 x 3.65 x 3.27,  3 x 3 x 3, 5.5 x 5.5 x 5
                                           4.8 x 4.8 x 4 mm (one drawn)
    lesions per subject                    1 - 8                           4 - 12
    phantom anatomy and uptake             ``training`` variety            ``shifted`` variety
    =====================================  ==============================  ==============================

SPECT (``spect_projection_completion``) uses the same phantom families (``phantom_variety``); its
shifted family also widens the orbit to 320 mm, as the shifted bodies reach 550 mm.
"""
