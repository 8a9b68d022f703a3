"""Machine-readable reason codes: why a frame was rejected, why a model update was refused, why a
refresh candidate was not promoted.

They are part of the wire contract: ``Verdict.reason`` and the dead-letter ``dlq-reason`` header
carry a :class:`RejectReason`, the ``reason`` label of ``inspector_model_refused_total`` is a
:class:`RefusalReason`, and ``trainer refresh``'s JSON summary lists :class:`GateReason` codes
beside the sentences for people. Consumers match codes, never sentences. Adding a member is a
compatible change; renaming or removing one is not.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why a frame got a ``rejected`` verdict (and a dead-letter copy) instead of a score."""

    EMPTY = "empty"  #: the record has no value
    TOO_LARGE_BYTES = "too_large_bytes"  #: the encoded frame is over the byte limit
    TOO_MANY_PIXELS = "too_many_pixels"  #: the decoded frame would be over the pixel limit
    TOO_SMALL = "too_small"  #: a side is below the minimum
    UNSUPPORTED_TYPE = "unsupported_type"  #: a pixel type, shape or channel count the model cannot take
    UNDECODABLE = "undecodable"  #: the bytes are not an image of a supported format
    BAD_HEADER = "bad_header"  #: a frame header (model, dims, dtype ...) is malformed
    UNKNOWN_MODEL = "unknown_model"  #: no model of that name is served by this worker
    OVERLOADED = "overloaded"  #: the batcher stayed full (back-pressure could not hold the frame)
    INFERENCE_ERROR = "inference_error"  #: the engine failed on the batch (e.g. device out of memory)
    INTERNAL_ERROR = "internal_error"  #: anything else; the detail says what


#: The reasons a decoder can give (``inspector.contracts.decode.DecodeError``).
DECODE_REASONS: frozenset[RejectReason] = frozenset({
    RejectReason.EMPTY, RejectReason.TOO_LARGE_BYTES, RejectReason.TOO_MANY_PIXELS, RejectReason.TOO_SMALL,
    RejectReason.UNSUPPORTED_TYPE, RejectReason.UNDECODABLE,
})


class RefusalReason(StrEnum):
    """Why a worker refused a model update or its starting checkpoint (the live model keeps serving)."""

    LOCATION = "location"  #: the update's path resolves outside the models directory
    SIGNATURE = "signature"  #: not signed by a trusted key (with trusted keys configured)
    KEY_MISMATCH = "key_mismatch"  #: signed, but the statement does not match the update
    MANIFEST_MISSING = "manifest_missing"
    MANIFEST_INVALID = "manifest_invalid"
    MANIFEST_HASH = "manifest_hash"  #: the manifest is not the announced one
    REPLAY = "replay"  #: issued before the update of the live version
    ROLLBACK = "rollback"  #: older than the live checkpoint and not marked as a rollback
    WEIGHTS_MISSING = "weights_missing"
    WEIGHTS_HASH = "weights_hash"  #: the weights are not the ones the manifest pins
    WEIGHTS_UNREADABLE = "weights_unreadable"
    WEIGHTS_MISMATCH = "weights_mismatch"  #: the tensors do not fit the architecture the manifest names
    TEACHER = "teacher"  #: the teacher's weights are missing or not the pinned ones
    NAME_MISMATCH = "name_mismatch"  #: the checkpoint is of another model than the update names
    SMOKE_FAILED = "smoke_failed"  #: the model gave no finite scores on its probe frame
    INVALID_UPDATE = "invalid_update"  #: the update message does not parse
    INVALID = "invalid"  #: anything else about the checkpoint


class GateReason(StrEnum):
    """Why ``trainer refresh`` did not promote a candidate (the codes of its summary's ``gate``)."""

    TOO_FEW_IMAGES = "too_few_images"  #: the normal-image store holds fewer than min_images
    HOLDOUT_FRR_OVER_TARGET = "holdout_frr_over_target"  #: first model: held-out normals rejected above target + margin
    HOLDOUT_FRR_WORSE = "holdout_frr_worse"  #: held-out normals rejected more often than by the live model
    HOLDOUT_SCORES_SHIFTED = "holdout_scores_shifted"  #: held-out normal scores moved towards the threshold
    LABELLED_IMAGE_AUROC_DROP = "labelled_image_auroc_drop"  #: image AUROC on the labelled set fell
    LABELLED_AUPRO_DROP = "labelled_aupro_drop"  #: AUPRO on the labelled set fell
    LABELLED_RECALL_DROP = "labelled_recall_drop"  #: defect recall fell, also at the live model's false-reject rate
    LABELLED_THRESHOLD_LOOSENED = "labelled_threshold_loosened"  #: recall fell with no fewer false rejects
    LABELLED_FRR_WORSE = "labelled_frr_worse"  #: the labelled set's good images rejected more often
    LABELLED_SCORES_SHIFTED = "labelled_scores_shifted"  #: the labelled set's good images moved towards the threshold
