"""kafka-python connection keyword arguments from settings, shared by the service and the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr


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


def check_group_and_security(heartbeat_interval_ms: int, session_timeout_ms: int, security_protocol: str,
                             sasl_mechanism: str | None) -> None:
    """Settings combinations kafka-python would only reject at connect time."""
    if heartbeat_interval_ms >= session_timeout_ms:
        raise ValueError("kafka_heartbeat_interval_ms must be below kafka_session_timeout_ms")
    if security_protocol.startswith("SASL") and not sasl_mechanism:
        raise ValueError("kafka_sasl_mechanism is required with a SASL security protocol")
