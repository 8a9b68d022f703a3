"""One polled record on its way through the worker: from intake to its verdict's acknowledgement."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from inspector.contracts.wire import FrameHeaders, Source
from inspector.pipeline.offsets import Ticket
from inspector.pipeline.rejection import Rejection

P = TypeVar("P", bound=Hashable)


@dataclass
class Frame(Generic[P]):
    """A record and what the pipeline learned about it; ``P`` is the partition type of its ticket."""

    ticket: Ticket[P]
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # dropped once decoded: only rejected frames need their bytes (dead-letter copy)
    raw_headers: Any
    headers: FrameHeaders
    model: str | None
    received_ms: float  # epoch milliseconds
    received_mono: float
    size: int
    image: np.ndarray | None = None
    reserved: int = 0  # bytes of the decoded-image budget this frame holds
    reject: Rejection | None = None
    finished: bool = field(default=False, repr=False)

    @property
    def source(self) -> Source:
        """Where the frame was read from, as verdicts and dead letters name it."""
        return Source(topic=self.topic, partition=self.partition, offset=self.offset)
