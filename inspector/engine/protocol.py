"""``Engine``: what the serving path (worker, rollout, ``inspector score``) knows of a model.

The worker batches frames by ``units`` and turns ``infer``'s inspections into verdicts stamped
with ``name``, ``version``, ``threshold`` and ``region_threshold`` (exported with ``numerics`` and
``threshold_calibrated_in``); the rollout smoke-tests and
warms a new engine at its input size (``geometry``), orders releases by its ``manifest`` and
logs its ``device``. ``load_engine`` returns one (``DiscrepancyEngine``); anything else with
these members (a fake in a test) serves as well. Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch

    from inspector.engine.engine import Inspection
    from inspector.model.checkpoint import Manifest
    from inspector.model.geometry import Geometry


@runtime_checkable
class Engine(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def threshold(self) -> float:
        """Image scores at or above it are defects."""
        ...

    @property
    def region_threshold(self) -> float:
        """The map level that outlines regions, masks and the heatmap's midpoint."""
        ...

    @property
    def numerics(self) -> str:
        """How its scores are computed (``ExecutionPlan.numerics``: ``fp32``, ``openvino-bf16``, ...)."""
        ...

    @property
    def threshold_calibrated_in(self) -> str:
        """The numerics ``threshold`` was calibrated in: ``numerics`` itself, or ``fp32`` where the
        checkpoint has no threshold of its own for them."""
        ...

    @property
    def manifest(self) -> Manifest: ...

    @property
    def geometry(self) -> Geometry:
        """How frames become model input (``geometry.hw``: the input size)."""
        ...

    @property
    def device(self) -> torch.device: ...

    def units(self, hw: tuple[int, int]) -> int:
        """Engine work for one frame of this size (what the micro-batcher counts)."""
        ...

    def infer(self, images: Sequence[np.ndarray]) -> list[Inspection]:
        """One inspection per decoded image (HxWx3 uint8), in order."""
        ...

    def warm_up(self, max_batch: int) -> None:
        """Run every batch shape serving will see once, before serving."""
        ...
