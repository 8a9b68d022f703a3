"""Settings of the scheduled jobs (`trainer collect`, `trainer refresh`): pydantic-settings, prefix ``TRAINER_``.

The Kafka connection and security fields are the service's, from one base class
(``inspector.contracts.kafka.KafkaConnectionSettings``): ``TRAINER_KAFKA_BOOTSTRAP_SERVERS``,
``TRAINER_KAFKA_SECURITY_PROTOCOL``, ``TRAINER_KAFKA_SASL_*``, ``TRAINER_KAFKA_SSL_*``, so one
secret/config map can feed both. Command-line options override single values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from inspector.contracts.decode import DecodeLimits
from inspector.contracts.kafka import KafkaConnectionSettings, check_group_timing


class TrainerSettings(KafkaConnectionSettings):
    """Configuration of the normal-image collector and the checkpoint refresh job."""

    model_config = SettingsConfigDict(env_prefix="TRAINER_", extra="ignore", validate_default=True)

    # --- Kafka (connection and security: KafkaConnectionSettings) -------------------------------
    kafka_client_id: str = Field("inspector-trainer", description="Kafka client id prefix.")
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000, description="Consumer group session timeout (6000 in dev/tests).")
    kafka_heartbeat_interval_ms: int = Field(3_000, ge=100)
    kafka_max_poll_records: int = Field(64, ge=1)
    kafka_max_partition_fetch_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    normal_topic: str = Field("frames.normal", description="Confirmed-normal frames (same format as the input topic).")
    group_id: str = Field("inspector-trainer-collect", description="Consumer group of `trainer collect`.")
    models_topic: str = Field("inspector.models", description="Workers' compacted control topic (key model name).")
    publish_timeout_s: float = Field(30.0, gt=0, description="Wait this long for the control-topic ack.")

    # --- Store -------------------------------------------------------------------------------
    store_dir: Path = Field(Path("data/normal-store"), description="Normal-image store (persistent volume).")
    default_model: str = Field("default", description="Model of frames without a `model` header.")
    store_max_images: int = Field(5_000, ge=1, description="Images kept per model (retention bound).")
    store_max_bytes: int = Field(20 * 1024**3, ge=1, description="Bytes kept per model (retention bound).")
    retention_buckets: int = Field(
        32, ge=1, le=10_000, description="Time buckets of the retention policy: eviction thins the most crowded one."
    )
    rejected_max_files: int = Field(1_000, ge=0, description="Undecodable frames kept for inspection per model.")
    max_frame_bytes: int = Field(32 * 1024 * 1024, ge=1, description="Larger frames are rejected.")
    max_pixels: int = Field(64_000_000, ge=1, description="Frames with more pixels are rejected.")
    min_side: int = Field(8, ge=1, description="Frames with a shorter side are rejected.")

    # --- Refresh -----------------------------------------------------------------------------
    checkpoints_dir: Path = Field(
        Path("models"), description="CHECKPOINTS/<model>/<version>/ and the CHECKPOINTS/<model>/live pointer."
    )
    signing_key: Path | None = Field(
        None, description="Ed25519 private key (PEM, from `trainer keygen`) that signs every model update; mount "
        "it from a secret. Unset (and no signing_key_pem): updates go out unsigned, with a warning.")
    signing_key_pem: SecretStr | None = Field(
        None, description="The signing key's PEM text itself, for secret stores that inject values rather than "
        "files; used when signing_key is unset. Never logged.")
    publish_relative: bool = Field(
        False,
        description="Announce checkpoints as '<model>/<version>' (relative to the workers' INSPECTOR_MODELS_DIR) "
        "instead of an absolute path.",
    )
    min_images: int = Field(200, ge=3, description="Refuse to refresh with fewer stored images than this.")
    val_fraction: float = Field(0.15, gt=0, lt=0.9, description="Share of the store held out for the gate.")
    max_frr_increase: float = Field(
        0.02, ge=0, description="Candidate FRR on held-out normals (and on the labelled set's good images) may exceed "
        "the live model's by at most this; never less than one image of the set (1/n)."
    )
    max_normal_score_shift: float = Field(
        0.25, ge=0,
        description="Largest move of the normals' median score towards the threshold, candidate vs live, on a "
        "unit-free scale per model (0 = its calibration normals' median, 1 = its threshold).",
    )
    max_auroc_drop: float = Field(0.02, ge=0, description="Largest image-AUROC drop on the labelled set.")
    max_aupro_drop: float = Field(0.03, ge=0, description="Largest AUPRO drop on the labelled set.")
    max_recall_drop: float = Field(
        0.05, ge=0, description="Largest drop of defect recall (each model at its own threshold) on the labelled set: "
        "catches a threshold made lenient by defective frames confirmed as normal by mistake.")
    eval_dir: Path | None = Field(None, description="Labelled MVTec-layout folder for AUROC/AUPRO (optional).")
    epochs: int = Field(20, ge=1, description="Epochs of a refresh (warm start needs fewer than from scratch).")
    image_size: int = Field(256, ge=16, le=4096, description="Image size when training from scratch.")
    method: Literal["rd", "dskd"] = Field("rd", description="Method when training from scratch.")
    teacher: str = Field("efficientnet_lite0", description="Teacher when training from scratch.")
    target_frr: float = Field(0.005, gt=0, lt=1, description="FRR target when training from scratch.")
    lr: float = Field(0.005, gt=0, description="Adam learning rate when training from scratch (paper default).")
    warm_start_lr: float = Field(
        0.0005, gt=0, description="Adam learning rate of a warm start: a fresh optimiser at the from-scratch rate "
        "would first throw the live weights far off.")
    batch_size: int = Field(16, ge=1)
    seed: int = 0
    warm_start: bool = Field(True, description="Warm-start from the live checkpoint (else from scratch).")
    device: str | None = Field(None, description="Torch device; default: cuda when available.")
    lock_timeout_s: float = Field(0.0, ge=0, description="Wait this long for the model's lock (0: fail at once).")
    keep_versions: int = Field(5, ge=1, description="Promoted versions kept per model (live and its parent always).")

    @model_validator(mode="after")
    def _check(self) -> TrainerSettings:
        check_group_timing(self.kafka_heartbeat_interval_ms, self.kafka_session_timeout_ms)
        return self

    def signing_private_key(self) -> Any:
        """The Ed25519 private key that signs model updates, or None when none is configured."""
        from inspector.model.signing import load_private_key

        if self.signing_key is not None:
            return load_private_key(Path(self.signing_key).read_bytes(), f"TRAINER_SIGNING_KEY ({self.signing_key})")
        if self.signing_key_pem is not None:
            return load_private_key(self.signing_key_pem.get_secret_value().encode(), "TRAINER_SIGNING_KEY_PEM")
        return None

    def consumer_group_kwargs(self) -> dict[str, Any]:
        return {
            "session_timeout_ms": self.kafka_session_timeout_ms,
            "heartbeat_interval_ms": self.kafka_heartbeat_interval_ms,
        }

    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(max_bytes=self.max_frame_bytes, max_pixels=self.max_pixels, min_side=self.min_side)

    def safe_dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
