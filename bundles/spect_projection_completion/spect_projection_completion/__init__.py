"""Task code of the ``spect_projection_completion`` bundle: projection files and sparse-view
transforms (:mod:`.transforms`), the view-completion network (:mod:`.networks`) and the
reconstruction-based evaluation (:mod:`.evaluation`). The dataset task itself is
``common.simulation.spect`` (the SPECT acquisition it simulates is shared physics)."""
