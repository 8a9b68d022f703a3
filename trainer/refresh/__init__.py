"""`trainer refresh --model NAME`: retrain from the normal-image store, gate, promote, announce.

- ``job``: one run (lock, store, split, fit, evaluate, gate, promote, history) and its exit codes;
- ``measure``: a loaded engine's metrics on the held-out normals and the labelled set;
- ``gate``: whether the candidate may replace the live model; each finding a
  :class:`~inspector.contracts.reasons.GateReason` code with its sentence;
- ``promote``: write the version, swap ``live``, publish the signed ``ModelUpdate``; ``adopt``.

The models volume's layout belongs to :class:`inspector.model.repository.ModelRepository`.

Exit codes: 0 promoted, 10 not promoted (the gate said no: the summary's ``gate`` lists the codes,
``reasons`` the sentences), 11 busy (another refresh of the model holds the lock), 2 failed.
"""

from inspector.model.repository import Busy

from .gate import GateFinding, enough_images, gate
from .job import EXIT_BUSY, EXIT_FAILED, EXIT_NOT_PROMOTED, EXIT_PROMOTED, refresh
from .promote import adopt, publish

__all__ = [
    "EXIT_BUSY",
    "EXIT_FAILED",
    "EXIT_NOT_PROMOTED",
    "EXIT_PROMOTED",
    "Busy",
    "GateFinding",
    "adopt",
    "enough_images",
    "gate",
    "publish",
    "refresh",
]
