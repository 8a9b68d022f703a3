"""Kafka connection settings shared by the service and the trainer, and the kafka-python keyword
arguments made from them.

:class:`KafkaConnectionSettings` declares the bootstrap servers, security protocol, SASL and SSL
fields once; ``inspector.runtime.settings.Settings`` (prefix ``INSPECTOR_``) and
``trainer.settings.TrainerSettings`` (prefix ``TRAINER_``) inherit them, so one secret/config map
can feed both (``INSPECTOR_KAFKA_SASL_PASSWORD``, ``TRAINER_KAFKA_SASL_PASSWORD``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaConnectionSettings(BaseSettings):
    """Where the brokers are and how to authenticate; subclasses set the env prefix."""

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers (host:port)."
    )
    kafka_security_protocol: SecurityProtocol = Field("PLAINTEXT", description="Kafka security protocol.")
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) to verify the brokers.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mTLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (PEM) for mTLS.")

    @model_validator(mode="after")
    def _check_kafka_security(self) -> KafkaConnectionSettings:
        check_security(self.kafka_security_protocol, self.kafka_sasl_mechanism)
        return self

    def kafka_common(self) -> dict[str, Any]:
        """Connection/security kwargs shared by kafka-python producers, consumers and admins."""
        return connection_kwargs(self.kafka_bootstrap_servers, self.kafka_security_protocol, self.kafka_sasl_mechanism,
                                 self.kafka_sasl_username, self.kafka_sasl_password, self.kafka_ssl_cafile,
                                 self.kafka_ssl_certfile, self.kafka_ssl_keyfile)


def connection_kwargs(bootstrap_servers: str, security_protocol: str, sasl_mechanism: str | None,
                      sasl_username: str | None, sasl_password: SecretStr | None, ssl_cafile: Path | None,
                      ssl_certfile: Path | None, ssl_keyfile: Path | None) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in bootstrap_servers.split(",") if s.strip()],
        "security_protocol": security_protocol,
    }
    if sasl_mechanism:
        kw["sasl_mechanism"] = sasl_mechanism
        kw["sasl_plain_username"] = sasl_username
        if sasl_password is not None:
            kw["sasl_plain_password"] = sasl_password.get_secret_value()
    for name, value in (("ssl_cafile", ssl_cafile), ("ssl_certfile", ssl_certfile), ("ssl_keyfile", ssl_keyfile)):
        if value:
            kw[name] = str(value)
    return kw


def check_security(security_protocol: str, sasl_mechanism: str | None) -> None:
    """A SASL protocol without a mechanism: kafka-python would only reject it at connect time."""
    if security_protocol.startswith("SASL") and not sasl_mechanism:
        raise ValueError("kafka_sasl_mechanism is required with a SASL security protocol")


def check_group_timing(heartbeat_interval_ms: int, session_timeout_ms: int) -> None:
    """A heartbeat no shorter than the session: kafka-python would only reject it at connect time."""
    if heartbeat_interval_ms >= session_timeout_ms:
        raise ValueError("kafka_heartbeat_interval_ms must be below kafka_session_timeout_ms")
