"""Every setting of the inspection service: one pydantic-settings model, env prefix ``INSPECTOR_``.

Names are flat so that the environment reads like the issue: ``INSPECTOR_KAFKA_BOOTSTRAP_SERVERS``,
``INSPECTOR_REDIS_URL``, ``INSPECTOR_CHECKPOINT``. Build one ``Settings()`` at start-up and pass it
down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from inspector.contracts.kafka import KafkaConnectionSettings, check_group_timing
from inspector.engine.options import EngineOptions


def _default_onnx_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inspector" / "onnx"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(KafkaConnectionSettings):
    """Configuration of `inspector serve` (and of the tools that talk to the same broker)."""

    model_config = SettingsConfigDict(
        env_prefix="INSPECTOR_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    # --- Kafka (connection and security: KafkaConnectionSettings) -------------------------------
    kafka_client_id: str = Field("inspector", description="Kafka client id prefix.")
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=1_000,
        description="Consumer group session timeout: a worker that dies loses its partitions to the group after this long (6000 in dev/tests).",
    )
    kafka_heartbeat_interval_ms: int = Field(
        3_000, ge=100, description="Consumer heartbeat interval; ~1/3 of the session timeout or less."
    )
    kafka_max_poll_interval_ms: int = Field(
        300_000, ge=1_000, description="Longest gap between polls before the group evicts the worker."
    )
    kafka_max_poll_records: int = Field(
        64, ge=1, description="Records handed out by one poll (bounds what enters the pipeline at once)."
    )
    kafka_max_partition_fetch_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Consumer fetch size per partition (bytes)."
    )
    kafka_fetch_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Consumer fetch size per request (bytes)."
    )
    kafka_max_request_size: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest record the producer sends (dead-letter copies of big frames).",
    )
    kafka_fetch_max_wait_ms: int = Field(
        50, ge=0, le=10_000, description="Longest time the broker may hold an empty fetch (bounds idle latency)."
    )
    kafka_linger_ms: int = Field(2, ge=0, description="Producer linger before sending a batch.")
    kafka_delivery_timeout_ms: int = Field(
        30_000, ge=1_000, description="Producer gives up on a record after this; it is then retried."
    )
    group_id: str = Field("inspector", description="Consumer group of the workers.")
    frames_topic: str = Field("frames", description="Input topic: key camera id, value image bytes.")
    verdicts_topic: str = Field("verdicts", description="Output topic: JSON verdicts, key camera id.")
    dlq_topic: str = Field("frames.dlq", description="Dead-letter topic for rejected frames.")
    models_topic: str = Field(
        "inspector.models", description="Compacted control topic: key model name, value ModelUpdate."
    )
    commit_interval_ms: int = Field(
        500, ge=10, description="How often acknowledged offsets are committed."
    )

    # --- Redis -------------------------------------------------------------------------------
    redis_url: str | None = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis URL (redis:// or rediss:// for TLS). Empty disables the heatmap cache.",
    )
    redis_password: SecretStr | None = Field(None, description="Redis password (never logged).")
    redis_username: str | None = Field(None, description="Redis ACL user name.")
    redis_ssl: bool = Field(False, description="Use TLS to Redis (also implied by rediss://).")
    redis_ssl_ca_certs: Path | None = Field(None, description="CA bundle (PEM) to verify Redis.")
    redis_ssl_certfile: Path | None = Field(None, description="Client certificate for Redis mTLS.")
    redis_ssl_keyfile: Path | None = Field(None, description="Client key for Redis mTLS.")
    redis_timeout_s: float = Field(
        0.25, gt=0, le=30, description="Socket connect/read timeout: a slow Redis never blocks verdicts."
    )
    redis_retry_after_s: float = Field(
        1.0, ge=0, description="After a Redis failure, skip writes (counted as failures) this long."
    )
    redis_queue_max: int = Field(
        256, ge=1, description="Heatmaps waiting for Redis; beyond this they are dropped and counted."
    )
    heatmap_ttl_s: int = Field(3600, ge=1, description="TTL of each heatmap key in Redis (seconds).")
    redis_max_frames_per_camera: int = Field(
        100,
        ge=1,
        description="Latest frame ids kept per camera; older heatmaps are deleted (bounds memory).",
    )

    # --- Batching, queues ---------------------------------------------------------------------
    max_batch: int = Field(8, ge=1, le=1024, description="Largest inference batch, in frames (tiled models: in tiles).")
    max_tiles_per_call: int = Field(
        64, ge=1, le=4096, description="Most tiles of a tiled model in one engine call (a micro-batch of large "
        "frames runs in several calls)."
    )
    max_delay_ms: float = Field(
        20.0, ge=0, description="A batch is flushed this long after its first frame arrived."
    )
    max_inflight_frames: int = Field(
        256,
        ge=1,
        description="Frames polled but not yet acknowledged; above it the partitions are paused.",
    )
    max_inflight_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="Encoded bytes polled but not yet acknowledged; above it partitions are paused.",
    )
    drain_timeout_s: float = Field(
        10.0, ge=0, description="On revoke/SIGTERM, wait this long for in-flight verdicts."
    )

    # --- Decoding ----------------------------------------------------------------------------
    max_frame_bytes: int = Field(
        32 * 1024 * 1024, ge=1, description="Frames with a larger encoded value are rejected."
    )
    max_pixels: int = Field(
        64_000_000, ge=1, description="Frames with more pixels (width x height) are rejected."
    )
    max_decoded_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1024,
        description="Decoded pixels a worker holds at once (frames waiting for inference); a decode waits "
        "for room. Bounds memory when frames compress well (a small PNG can decode to hundreds of MB).",
    )
    decode_threads: int = Field(2, ge=1, le=64, description="Decoder thread pool size.")
    malloc_mmap_threshold: int | None = Field(
        1024 * 1024,
        ge=0,
        description="glibc: allocations of at least this many bytes (decoded images) get their own "
        "mapping, returned to the system when freed; a fixed value stops glibc from raising the "
        "threshold after the first large free and keeping freed images in its heaps. Empty: glibc's default.",
    )

    # --- Models ------------------------------------------------------------------------------
    device: str | None = Field(None, description="Torch device (cpu, cuda, cuda:1); default: auto.")
    torch_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Intra-op threads for CPU inference (default: torch's). On small CPU boxes 1 avoids "
        "oversubscription with the decode threads.",
    )
    engine_backend: Literal["auto", "torch", "onnx", "openvino"] = Field(
        "auto",
        description="How models run: auto = the measured best for the device (CPU: OpenVINO bf16 where "
        "OpenVINO reports native bf16, else ONNX Runtime fp32, else torch; CUDA: torch). A backend the "
        "engine chose itself that fails its check against torch falls back along that list; one named "
        "here is refused instead. See docs/PERFORMANCE.md.",
    )
    engine_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Network precision (maps are always float32): auto = bf16 where the backend runs it "
        "natively (OpenVINO on a bf16 CPU, CUDA), else fp32. fp32 on the CPU: ONNX Runtime, exact.",
    )
    engine_channels_last: bool | None = Field(
        None, description="Channels-last memory layout for the torch backend (default: on)."
    )
    engine_compile: bool = Field(
        False,
        description="torch.compile the model (torch backend; one graph per batch size, compiled during "
        "the warm-up batches; minutes on a small CPU).",
    )
    onnx_cache_dir: Path | None = Field(
        default_factory=_default_onnx_cache_dir,
        description="Where exported ONNX graphs are kept between loads of the same checkpoint, so a "
        "restarted worker skips the export (default: $XDG_CACHE_HOME/inspector/onnx, else "
        "~/.cache/inspector/onnx). Every cached graph is checked against torch before use. Empty: no cache.",
    )
    checkpoint: Path | None = Field(
        None, description="Starting checkpoint directory when the control topic names none."
    )
    default_model: str | None = Field(
        None,
        description="Model for frames without a `model` header (default: the starting checkpoint's).",
    )
    models_dir: Path = Field(
        Path("models"), description="The only directory (after symlinks and '..') that checkpoint locations in "
        "updates may point into; relative locations start here."
    )
    model_trusted_keys: str = Field(
        "",
        description="Public keys that model updates and INSPECTOR_CHECKPOINT must be signed with, comma-"
        "separated: 'ed25519:<base64>' (as `trainer keygen` prints) or files holding them. Several at once "
        "for rotation. Empty: nothing is signature-checked (a warning at start-up and in /readyz).",
    )
    mask_size: int = Field(32, ge=4, le=1024, description="Side of the binary mask in verdicts.")
    region_min_area: int = Field(
        0, ge=0, description="Regions smaller than this (original pixels) are left out of verdicts."
    )
    model_warmup_batches: int = Field(
        2, ge=0, le=20, description="Full-size dummy batches run on a newly loaded model before it serves."
    )
    rollout_catchup_s: float = Field(
        5.0, ge=0, description="At start, read the control topic this long before serving."
    )

    # --- Process -----------------------------------------------------------------------------
    worker_id: str = Field(default_factory=_default_worker_id, description="Stated in each verdict.")
    http_host: str = Field("127.0.0.1", description="Bind address of /healthz /readyz /metrics.")
    http_port: int = Field(9464, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the JSON logs."
    )

    @field_validator("onnx_cache_dir", "malloc_mmap_threshold", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    @model_validator(mode="after")
    def _check(self) -> Settings:
        check_group_timing(self.kafka_heartbeat_interval_ms, self.kafka_session_timeout_ms)
        if self.redis_url == "":
            self.redis_url = None
        return self

    # -- helpers that turn settings into client keyword arguments (kafka_common: the base) ------
    def consumer_group_kwargs(self) -> dict[str, Any]:
        """Group-membership timing kwargs for kafka-python consumers."""
        return {
            "session_timeout_ms": self.kafka_session_timeout_ms,
            "heartbeat_interval_ms": self.kafka_heartbeat_interval_ms,
            "max_poll_interval_ms": max(self.kafka_max_poll_interval_ms, self.kafka_session_timeout_ms),
        }

    def redis_kwargs(self) -> dict[str, Any]:
        """kwargs for ``redis.Redis.from_url(self.redis_url, **kw)`` with bounded timeouts."""
        kw: dict[str, Any] = {
            "socket_timeout": self.redis_timeout_s,
            "socket_connect_timeout": self.redis_timeout_s,
            "retry_on_timeout": False,
            "health_check_interval": 0,
        }
        if self.redis_password is not None:
            kw["password"] = self.redis_password.get_secret_value()
        if self.redis_username:
            kw["username"] = self.redis_username
        if self.redis_tls:
            if self.redis_ssl_ca_certs:
                kw["ssl_ca_certs"] = str(self.redis_ssl_ca_certs)
            if self.redis_ssl_certfile:
                kw["ssl_certfile"] = str(self.redis_ssl_certfile)
            if self.redis_ssl_keyfile:
                kw["ssl_keyfile"] = str(self.redis_ssl_keyfile)
        return kw

    @property
    def redis_tls(self) -> bool:
        return self.redis_ssl or (self.redis_url or "").startswith("rediss://")

    def redis_connection_url(self) -> str | None:
        """The Redis URL with the TLS scheme applied when ``redis_ssl`` is set."""
        url = self.redis_url
        if url and self.redis_ssl and url.startswith("redis://"):
            url = "rediss://" + url[len("redis://"):]
        return url

    def engine_options(self) -> EngineOptions:
        """How loaded models run and what their inspections carry: the one place Settings
        become ``EngineOptions`` (regions below one pixel are not regions)."""
        return EngineOptions(backend=self.engine_backend, precision=self.engine_precision,
                             channels_last=self.engine_channels_last, compile=self.engine_compile,
                             onnx_cache_dir=self.onnx_cache_dir, max_tiles=self.max_tiles_per_call,
                             mask_size=self.mask_size, min_region_area=max(1, self.region_min_area))

    def safe_dump(self) -> dict[str, Any]:
        """Settings as a JSON-able dict for logs; secrets stay masked."""
        return self.model_dump(mode="json")


def working_memory_bound(settings: Settings) -> int:
    """Bytes a worker may hold above its idle footprint (model loaded, nothing in flight).

    Encoded frames in flight (``max_inflight_bytes``) plus one consumer fetch
    (``kafka_fetch_max_bytes``), decoded images waiting for inference (``max_decoded_bytes``),
    and per decoder thread and for the inference thread one image's transients at the pixel
    limit (16 bytes a pixel: the decoder's colour conversion, preprocessing's float copy)."""
    transient = (settings.decode_threads + 1) * settings.max_pixels * 16
    return settings.max_inflight_bytes + settings.kafka_fetch_max_bytes + settings.max_decoded_bytes + transient
