"""The shared library of the bundles, one package per role: :mod:`common.physics` (attenuation,
nuclides, projectors, reconstruction, counting noise), :mod:`common.simulation` (phantoms, PET and
SPECT acquisitions, dataset tasks and their writer), :mod:`common.dosimetry` (reference Monte
Carlo dose rate, voxel S-values and convolution dosimetry), :mod:`common.learning` (network wrappers,
transforms, metrics and the named workflow steps bundle configs call) and :mod:`common.data`
(files and datalists). Only what two or more tasks use lives here; what serves one task lives in
its bundle's own package, ``bundles/<name>/<name>/``.
"""
