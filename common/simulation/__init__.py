"""Simulation: seeded procedural phantoms (:mod:`~common.simulation.phantoms`: anatomy, CT in HU,
MR-like T1, tracer activity in Bq/mL, lesions, labels) and the acquisitions made from them with
the models of :mod:`common.physics` (:mod:`~common.simulation.pet`: PET sinograms with
attenuation, scatter, randoms and Poisson counts, OSEM in SUV; :mod:`~common.simulation.spect`:
SPECT projections at all and at sparse views, OSEM in Bq/mL), plus the dataset-task registry and
its seeded, resumable, shardable writer (:mod:`~common.simulation.datasets`). Every subject draws
from ``numpy.random.default_rng([seed, index])``. A task that serves one bundle registers its
builder in that bundle's package (``bundles/<name>/<name>/dataset.py``); the shared task here is
``spect_projection_completion`` (its bundle is still to come).
"""
