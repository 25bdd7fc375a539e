"""Ignite handlers every bundle's ``train.json`` uses, so a training run shows and leaves the same
things in every bundle (DESIGN 4):

- :class:`ValidationHandler`: MONAI's, validating every ``interval`` epochs *and after the last
  epoch*, so the best-metric ``CheckpointSaver`` of the validator writes ``model.pt`` in any run
  that completes (``--num_epochs 1`` with ``val_interval`` 5 used to leave none);
- :class:`ProgressBar`: ignite's tqdm bar with the loss on it, attached the way MONAI attaches
  handlers (``handler.attach(engine)``), in place of one loss line per iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar as _IgniteProgressBar
from monai.handlers import ValidationHandler as _MonaiValidationHandler

__all__ = ["ValidationHandler", "ProgressBar"]


class ValidationHandler(_MonaiValidationHandler):
    """:class:`monai.handlers.ValidationHandler` (epoch level) that also runs after the last epoch
    of the run (``engine.state.max_epochs``) when that epoch is not a multiple of ``interval``."""

    def attach(self, engine: Engine) -> None:
        if not self.epoch_level:
            super().attach(engine)
            return
        interval = self.interval

        def due(engine: Engine, epoch: int) -> bool:
            return epoch % interval == 0 or epoch == engine.state.max_epochs

        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=due), self)
        if self.exec_at_start:
            engine.add_event_handler(Events.STARTED, self)


class ProgressBar(_IgniteProgressBar):
    """:class:`ignite.handlers.ProgressBar` that shows the value ``output_key`` of the engine's
    output (e.g. ``"loss"`` of a MONAI trainer) when MONAI attaches it with ``attach(engine)``.

    Args:
        output_key: key of ``engine.state.output`` to show (``monai.handlers.from_engine``); None: none.
        kwargs: :class:`ignite.handlers.ProgressBar` arguments (``persist``, ``desc``, ...).
    """

    def __init__(self, output_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_key = output_key

    def _show(self, output: Any) -> dict[str, float]:
        # a MONAI trainer's output is a dict, or a list of per-sample dicts after decollation
        value = (output[0] if isinstance(output, (list, tuple)) else output)[self.output_key]
        return {self.output_key: float(value)}

    def attach(self, engine: Engine, metric_names: Any = None, output_transform: Callable | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        if output_transform is None and self.output_key is not None:
            output_transform = self._show
        super().attach(engine, metric_names=metric_names, output_transform=output_transform, **kwargs)
