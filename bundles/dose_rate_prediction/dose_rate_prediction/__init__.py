"""Task code of the ``dose_rate_prediction`` bundle: its dataset task (:mod:`.dataset`: torso
phantoms with Lu-177 uptake and their Monte Carlo dose rate), the input channels and activity
normalisation (:mod:`.transforms`), the residual network over density-scaled VSV
(:mod:`.networks`) and the dosimetric evaluation against VSV-water, density-scaled VSV and local
deposition (:mod:`.evaluation`). The Monte Carlo and the VSV baselines are ``common.dosimetry``."""
