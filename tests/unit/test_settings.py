"""Settings: env prefix, defaults, secrets masked, client kwargs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inspector.runtime.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("INSPECTOR_"):
            monkeypatch.delenv(k)


def test_defaults_are_safe():
    s = Settings()
    assert s.http_host == "127.0.0.1"
    assert s.frames_topic == "frames" and s.verdicts_topic == "verdicts"
    assert s.dlq_topic == "frames.dlq" and s.models_topic == "inspector.models"
    assert s.checkpoint is None and s.worker_id


def test_every_field_has_a_description():
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert missing == []


def test_env_prefix(monkeypatch):
    monkeypatch.setenv("INSPECTOR_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1, 127.0.0.1:2")
    monkeypatch.setenv("INSPECTOR_REDIS_URL", "redis://127.0.0.1:7/1")
    monkeypatch.setenv("INSPECTOR_CHECKPOINT", "/tmp/ck")
    monkeypatch.setenv("INSPECTOR_MAX_BATCH", "16")
    s = Settings()
    assert s.kafka_common()["bootstrap_servers"] == ["127.0.0.1:1", "127.0.0.1:2"]
    assert s.redis_url == "redis://127.0.0.1:7/1"
    assert str(s.checkpoint) == "/tmp/ck" and s.max_batch == 16


def test_secrets_are_masked_but_usable(monkeypatch):
    monkeypatch.setenv("INSPECTOR_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("INSPECTOR_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("INSPECTOR_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("INSPECTOR_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("INSPECTOR_REDIS_PASSWORD", "s3cret")
    s = Settings()
    dumped = str(s.safe_dump()) + repr(s) + str(s)
    assert "hunter2" not in dumped and "s3cret" not in dumped
    assert s.kafka_common()["sasl_plain_password"] == "hunter2"
    assert s.redis_kwargs()["password"] == "s3cret"


def test_invalid_values_refused():
    with pytest.raises(ValidationError):
        Settings(max_batch=0)
    with pytest.raises(ValidationError):
        Settings(kafka_session_timeout_ms=6000, kafka_heartbeat_interval_ms=6000)
    with pytest.raises(ValidationError):
        Settings(kafka_security_protocol="SASL_SSL")  # no mechanism
    with pytest.raises(ValidationError):
        Settings(kafka_security_protocol="SMOKE_SIGNALS")


def test_redis_tls_and_empty_url():
    s = Settings(redis_url="redis://h:1/0", redis_ssl=True, redis_ssl_ca_certs="/ca.pem")
    assert s.redis_connection_url() == "rediss://h:1/0"
    assert s.redis_kwargs()["ssl_ca_certs"] == "/ca.pem"
    assert s.redis_kwargs()["socket_timeout"] == s.redis_timeout_s
    assert Settings(redis_url="").redis_url is None


# --- the Kafka connection fields: one base class, each model's own prefix ----------------------

CONNECTION_FIELDS = ["kafka_bootstrap_servers", "kafka_security_protocol", "kafka_sasl_mechanism",
                     "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_cafile", "kafka_ssl_certfile",
                     "kafka_ssl_keyfile"]


def test_service_and_trainer_share_the_kafka_connection_fields():
    from inspector.contracts.kafka import KafkaConnectionSettings
    from trainer.settings import TrainerSettings

    assert list(KafkaConnectionSettings.model_fields) == CONNECTION_FIELDS
    for model in (Settings, TrainerSettings):
        assert issubclass(model, KafkaConnectionSettings)
        assert list(model.model_fields)[: len(CONNECTION_FIELDS)] == CONNECTION_FIELDS
        for name in CONNECTION_FIELDS:
            assert model.model_fields[name].description == KafkaConnectionSettings.model_fields[name].description
    assert Settings().kafka_bootstrap_servers == "127.0.0.1:9092"
    assert Settings().kafka_security_protocol == "PLAINTEXT"


def test_trainer_reads_the_same_names_with_its_own_prefix(monkeypatch):
    from trainer.settings import TrainerSettings

    for k in ("TRAINER_KAFKA_BOOTSTRAP_SERVERS", "TRAINER_KAFKA_SECURITY_PROTOCOL", "TRAINER_KAFKA_SASL_MECHANISM",
              "TRAINER_KAFKA_SASL_USERNAME", "TRAINER_KAFKA_SASL_PASSWORD", "TRAINER_KAFKA_SSL_CAFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("INSPECTOR_KAFKA_BOOTSTRAP_SERVERS", "service:1")  # not the trainer's
    monkeypatch.setenv("TRAINER_KAFKA_BOOTSTRAP_SERVERS", "b1:9093,b2:9093")
    monkeypatch.setenv("TRAINER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TRAINER_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("TRAINER_KAFKA_SASL_USERNAME", "trainer")
    monkeypatch.setenv("TRAINER_KAFKA_SASL_PASSWORD", "hunter3")
    monkeypatch.setenv("TRAINER_KAFKA_SSL_CAFILE", "/ca.pem")
    t = TrainerSettings()
    kw = t.kafka_common()
    assert kw["bootstrap_servers"] == ["b1:9093", "b2:9093"] and kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_plain_username"] == "trainer" and kw["sasl_plain_password"] == "hunter3"
    assert kw["ssl_cafile"] == "/ca.pem"
    assert "hunter3" not in str(t.safe_dump()) + repr(t)
    assert Settings().kafka_common()["bootstrap_servers"] == ["service:1"]


def test_trainer_refuses_what_the_service_refuses():
    from trainer.settings import TrainerSettings

    with pytest.raises(ValidationError, match="kafka_sasl_mechanism is required"):
        TrainerSettings(kafka_security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ValidationError, match="heartbeat"):
        TrainerSettings(kafka_session_timeout_ms=3000, kafka_heartbeat_interval_ms=3000)
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism is required"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT")
