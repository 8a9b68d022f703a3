"""Deployment files (deploy/, docker-compose.yml): they parse, and they agree with the code.

The settings models ignore unknown environment variables (``extra="ignore"``), so a misspelt
``INSPECTOR_*`` / ``TRAINER_*`` name in a manifest would be silently dropped at run time. These
cross-checks make it fail here instead: every name set anywhere must be a settings field, every
value must validate, and the probes, ports, topics, commands and references between the files
must match one another and the code. No Docker engine or cluster is needed.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from inspector.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

TOKEN = {"INSPECTOR_": re.compile(r"\bINSPECTOR_[A-Z0-9_]+"), "TRAINER_": re.compile(r"\bTRAINER_[A-Z0-9_]+")}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def yaml_files() -> list[Path]:
    found = sorted({*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")})
    return [*found, COMPOSE]


def load_docs(path: Path) -> list[Any]:
    with path.open() as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in load_docs(p) if isinstance(d, dict) and "kind" in d]


def k8s_kind(kind: str) -> list[dict]:
    return [d for _, d in k8s_docs() if d["kind"] == kind]


def one(kind: str, name: str | None = None) -> dict:
    docs = [d for d in k8s_kind(kind) if name is None or d["metadata"]["name"] == name]
    assert len(docs) == 1, f"expected one {kind}{' ' + name if name else ''} in deploy/k8s, found {len(docs)}"
    return docs[0]


def compose() -> dict:
    (doc,) = load_docs(COMPOSE)
    return doc


def interpolate(value: str) -> str:
    """Compose interpolation with an empty environment: ${VAR:-default} -> default, $$ -> $."""
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)
    return value.replace("$$", "$")


def service_env(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined; heredoc bodies skipped."""
    out: list[tuple[str, str]] = []
    lines = DOCKERFILE.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.rstrip().endswith("\\") and i < len(lines):
            line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        heredoc = re.search(r"<<-?'?\"?([A-Z]+)'?\"?\s*$", line)
        if heredoc:
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def dockerfile_heredocs() -> list[str]:
    return re.findall(r"<<'EOF'\n(.*?)\nEOF\n", DOCKERFILE.read_text(), flags=re.S)


def env_names(model: type[BaseSettings]) -> set[str]:
    """Upper-case environment variable names a settings model reads (prefix, aliases, nesting)."""
    cfg = model.model_config
    prefix = cfg.get("env_prefix", "") or ""
    delim = cfg.get("env_nested_delimiter") or ""
    names: set[str] = set()

    def add(fields: dict, base: str, top: bool) -> None:
        for name, field in fields.items():
            alias = field.validation_alias or field.alias if top else None
            if isinstance(alias, str):
                names.add(alias.upper())
                continue
            if alias is not None and hasattr(alias, "choices"):
                names.update(str(c).upper() for c in alias.choices if isinstance(c, str))
                continue
            full = f"{base}{name}"
            names.add(full.upper())
            ann = field.annotation
            if delim and inspect.isclass(ann) and issubclass(ann, BaseModel):
                add(ann.model_fields, f"{full}{delim}", False)

    add(model.model_fields, prefix, True)
    return names


def trainer_settings_model() -> type[BaseSettings]:
    if importlib.util.find_spec("trainer.settings") is None:
        pytest.skip("trainer/settings.py does not exist yet: TRAINER_* names cannot be checked")
    module = importlib.import_module("trainer.settings")
    models = [obj for obj in vars(module).values()
              if inspect.isclass(obj) and issubclass(obj, BaseSettings) and obj is not BaseSettings
              and obj.__module__ == module.__name__]
    assert len(models) == 1, f"expected one settings model in trainer.settings, found {models}"
    assert models[0].model_config.get("env_prefix") == "TRAINER_"
    return models[0]


def check_tokens(prefix: str, valid: set[str], texts: dict[str, str]) -> list[str]:
    """Every PREFIX_* token in the texts names a field (a token ending in '_' is a name prefix)."""
    bad = []
    for where, text in texts.items():
        for token in sorted(set(TOKEN[prefix].findall(text))):
            ok = any(v.startswith(token) for v in valid) if token.endswith("_") else token in valid
            if not ok:
                bad.append(f"{where}: {token}")
    return bad


def deploy_texts() -> dict[str, str]:
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in sorted(K8S.glob("*.yaml"))}
    texts["docker-compose.yml"] = COMPOSE.read_text()
    texts["deploy/Dockerfile"] = DOCKERFILE.read_text()
    return texts


def k8s_containers(doc: dict) -> list[dict]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = spec["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def k8s_set_names(prefix: str) -> dict[str, str]:
    """name -> where, for ConfigMap/Secret keys and container env entries."""
    found: dict[str, str] = {}
    for path, doc in k8s_docs():
        where = f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"
        keys: list[str] = []
        if doc["kind"] == "ConfigMap":
            keys += list(doc.get("data") or {})
        elif doc["kind"] == "Secret":
            keys += [*(doc.get("data") or {}), *(doc.get("stringData") or {})]
        elif doc["kind"] in ("Deployment", "CronJob", "Job", "StatefulSet", "DaemonSet"):
            keys += [e["name"] for c in k8s_containers(doc) for e in c.get("env", [])]
        for key in keys:
            if key.startswith(prefix):
                found[key] = where
    return found


def compose_set_names(prefix: str) -> dict[str, str]:
    return {k: f"docker-compose.yml:{name}" for name, svc in compose()["services"].items()
            for k in service_env(svc) if k.startswith(prefix)}


def configmap() -> dict[str, str]:
    return {k: str(v) for k, v in one("ConfigMap")["data"].items()}


def settings_from_env(monkeypatch, model: type[BaseSettings], env: dict[str, str]) -> BaseSettings:
    import os

    prefix = model.model_config["env_prefix"]
    for key in list(os.environ):
        if key.upper().startswith(prefix):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(prefix):
            monkeypatch.setenv(key, value)
    return model()


def worker_deployment() -> dict:
    deps = [d for d in k8s_kind("Deployment") if any("serve" in (c.get("args") or []) for c in k8s_containers(d))]
    assert len(deps) == 1, "expected one Deployment running `serve` in deploy/k8s"
    return deps[0]


# ---------------------------------------------------------------------------------------------
# the files parse
# ---------------------------------------------------------------------------------------------

def test_yaml_files_are_found():
    names = {p.name for p in yaml_files()}
    assert {"docker-compose.yml", "kustomization.yaml", "worker-deployment.yaml", "configmap.yaml", "secret.yaml",
            "worker-pdb.yaml", "worker-hpa.yaml", "trainer-cronjob.yaml", "pvc.yaml", "namespace.yaml"} <= names


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path):
    docs = load_docs(path)
    assert docs, f"{path} has no YAML document"
    if path.parent == K8S and path.name != "kustomization.yaml":
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path}: not a Kubernetes object: {doc}"
            assert doc["metadata"].get("name"), f"{path}: {doc['kind']} without a name"


def test_kustomization_lists_every_manifest():
    (kust,) = load_docs(K8S / "kustomization.yaml")
    listed = set(kust["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, f"kustomization.yaml resources {sorted(listed)} != files {sorted(present)}"


def test_dockerfile_structure():
    instr = dockerfile_instructions()
    words = [w for w, _ in instr]
    froms = [rest for w, rest in instr if w == "FROM"]
    assert len(froms) >= 2, "the Dockerfile should be multi-stage"
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] if "=" in rest else "" for w, rest in instr if w == "ARG"}
    assert "nvidia/cuda" in args.get("CUDA_BASE", "") or any("nvidia/cuda" in f for f in froms)
    assert "FETCH_TORCHVISION_WEIGHTS" in args
    users = [rest for w, rest in instr if w == "USER"]
    assert users, "no USER instruction: the image would run as root"
    last_user = users[-1].split(":")[0]
    last_user = args.get(last_user.strip("${}"), last_user) if last_user.startswith("$") else last_user
    assert last_user not in ("root", "0", ""), f"final USER is {users[-1]!r}"
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "FROM"), "USER must be set in the final stage"
    entry = [rest for w, rest in instr if w == "ENTRYPOINT"]
    cmd = [rest for w, rest in instr if w == "CMD"]
    assert entry and yaml.safe_load(entry[-1]) == ["inspector"]
    assert cmd and yaml.safe_load(cmd[-1]) == ["serve"]
    health = [rest for w, rest in instr if w == "HEALTHCHECK"]
    assert health and "/healthz" in health[-1]
    assert "pip install" in DOCKERFILE.read_text()


def test_dockerfile_user_matches_kubernetes_run_as_user():
    instr = dockerfile_instructions()
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for w, rest in instr if w == "ARG" and "=" in rest}
    user = [rest for w, rest in instr if w == "USER"][-1].split(":")[0]
    uid = args[user[2:-1]] if user.startswith("${") else user
    assert uid.isdigit(), "USER should be numeric so that Kubernetes can verify runAsNonRoot"
    for doc in [worker_deployment(), one("CronJob")]:
        pod = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else \
            doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == uid


def test_dockerfile_python_snippets_use_real_names():
    snippets = dockerfile_heredocs()
    assert snippets, "expected the weight-fetching python snippets in the Dockerfile"
    for code in snippets:
        check_python_snippet(code, "deploy/Dockerfile")
    from inspector.model.nets.teachers import TEACHERS

    default = re.search(r'ARG TORCHVISION_TEACHERS="([^"]*)"', DOCKERFILE.read_text()).group(1).split()
    assert default and all(TEACHERS[n].source == "torchvision" for n in default)


def test_dockerignore_keeps_what_the_build_copies():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for must in (".git", "runs/", "demo-output/", ".local-services/", "tests/", "**/__pycache__"):
        assert must in patterns, f".dockerignore should exclude {must}"
    copied = [rest.split()[0] for w, rest in dockerfile_instructions() if w == "COPY" and "--from" not in rest]
    for src in copied:
        top = src.rstrip("/").split("/")[0]
        assert top not in {p.rstrip("/") for p in patterns}, f".dockerignore excludes {src}, which the build COPYs"
        assert (ROOT / src).exists(), f"the Dockerfile COPYs {src}, which does not exist"


# ---------------------------------------------------------------------------------------------
# every setting named in the deployment files exists, and its value validates
# ---------------------------------------------------------------------------------------------

def test_env_names_of_settings_are_derived():
    names = env_names(Settings)
    assert {"INSPECTOR_KAFKA_BOOTSTRAP_SERVERS", "INSPECTOR_HTTP_PORT", "INSPECTOR_REDIS_PASSWORD"} <= names
    assert "INSPECTOR_NOT_A_SETTING" not in names
    assert check_tokens("INSPECTOR_", names, {"x": "INSPECTOR_HTTP_PROT=1"}) == ["x: INSPECTOR_HTTP_PROT"]


def test_every_inspector_variable_is_a_setting():
    valid = env_names(Settings)
    set_here = {**compose_set_names("INSPECTOR_"), **k8s_set_names("INSPECTOR_"),
                **{k: "deploy/Dockerfile" for k in dockerfile_env() if k.startswith("INSPECTOR_")}}
    assert len(set_here) >= 10, "expected INSPECTOR_* settings in compose, the ConfigMap and the Dockerfile"
    unknown = sorted(f"{where}: {name}" for name, where in set_here.items() if name.upper() not in valid)
    assert unknown == [], f"not fields of inspector.runtime.settings.Settings: {unknown}"
    # anywhere in the text too (comments, interpolations, scripts)
    assert check_tokens("INSPECTOR_", valid, deploy_texts()) == []


def test_every_trainer_variable_is_a_setting():
    model = trainer_settings_model()
    valid = env_names(model)
    set_here = {**compose_set_names("TRAINER_"), **k8s_set_names("TRAINER_"),
                **{k: "deploy/Dockerfile" for k in dockerfile_env() if k.startswith("TRAINER_")}}
    assert set_here, "expected TRAINER_* settings in compose or the ConfigMap"
    unknown = sorted(f"{where}: {name}" for name, where in set_here.items() if name.upper() not in valid)
    assert unknown == [], f"not fields of {model.__module__}.{model.__name__}: {unknown}"
    assert check_tokens("TRAINER_", valid, deploy_texts()) == []


def test_configmap_and_secret_values_validate(monkeypatch):
    secret = one("Secret")
    env = {**configmap(), **{k: str(v) for k, v in (secret.get("stringData") or {}).items()}}
    s = settings_from_env(monkeypatch, Settings, env)
    assert s.http_host == "0.0.0.0", "probes come from outside the pod: INSPECTOR_HTTP_HOST must be 0.0.0.0"
    if s.kafka_security_protocol.startswith("SASL"):
        assert s.kafka_sasl_username and s.kafka_sasl_password is not None
    if importlib.util.find_spec("trainer.settings") is not None:
        settings_from_env(monkeypatch, trainer_settings_model(), env)


def test_compose_values_validate(monkeypatch):
    services = compose()["services"]
    workers = [n for n, svc in services.items() if svc.get("command") == ["serve"]]
    assert workers, "no compose service runs `inspector serve`"
    for name in workers:
        s = settings_from_env(monkeypatch, Settings, service_env(services[name]))
        assert s.http_host == "0.0.0.0", f"{name}: INSPECTOR_HTTP_HOST must be 0.0.0.0 in a container"
    if importlib.util.find_spec("trainer.settings") is not None:
        model = trainer_settings_model()
        for name, svc in services.items():
            env = service_env(svc)
            if any(k.startswith("TRAINER_") for k in env):
                settings_from_env(monkeypatch, model, env)


def test_dockerfile_env_validates(monkeypatch):
    env = dockerfile_env()
    s = settings_from_env(monkeypatch, Settings, env)
    assert s.http_host == "0.0.0.0"
    exposed = [rest for w, rest in dockerfile_instructions() if w == "EXPOSE"]
    assert exposed and int(exposed[-1].split("/")[0]) == s.http_port


# ---------------------------------------------------------------------------------------------
# Kubernetes: worker probes, ports, references between the manifests
# ---------------------------------------------------------------------------------------------

def test_worker_probes_and_port_match_the_configmap():
    cm = configmap()
    port = int(cm["INSPECTOR_HTTP_PORT"])
    dep = worker_deployment()
    (container,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if "serve" in (c.get("args") or [])]
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert port in ports.values(), f"containerPort {sorted(ports.values())} != INSPECTOR_HTTP_PORT {port}"

    def probe(kind: str) -> tuple[str, int]:
        get = container[kind]["httpGet"]
        p = get["port"]
        return get["path"], ports[p] if isinstance(p, str) else int(p)

    assert probe("readinessProbe") == ("/readyz", port)
    assert probe("livenessProbe") == ("/healthz", port)
    if "startupProbe" in container:
        assert probe("startupProbe")[1] == port
    # the paths are the ones the worker serves
    source = (ROOT / "inspector" / "runtime" / "observability.py").read_text()
    assert '"/readyz"' in source and '"/healthz"' in source


def test_worker_gpu_security_and_drain():
    dep = worker_deployment()
    pod = dep["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if "serve" in (c.get("args") or [])]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert pod["securityContext"]["runAsNonRoot"] is True and int(pod["securityContext"]["runAsUser"]) != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    drain = float(configmap().get("INSPECTOR_DRAIN_TIMEOUT_S", Settings.model_fields["drain_timeout_s"].default))
    assert pod["terminationGracePeriodSeconds"] >= drain + 15, "grace period too short for the drain"
    refs = {r["configMapRef"]["name"] for r in container["envFrom"] if "configMapRef" in r}
    refs |= {r["secretRef"]["name"] for r in container["envFrom"] if "secretRef" in r}
    assert refs == {one("ConfigMap")["metadata"]["name"], one("Secret")["metadata"]["name"]}


def test_pdb_and_autoscaler_target_the_worker():
    dep = worker_deployment()
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    scaled = k8s_kind("ScaledObject")
    hpas = k8s_kind("HorizontalPodAutoscaler")
    assert scaled or hpas, "no autoscaler for the worker"
    for so in scaled:
        assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
        cm = configmap()
        fields = Settings.model_fields
        for trig in so["spec"]["triggers"]:
            assert trig["type"] == "kafka"
            meta = trig["metadata"]
            assert meta["consumerGroup"] == cm.get("INSPECTOR_GROUP_ID", fields["group_id"].default)
            assert meta["topic"] == cm.get("INSPECTOR_FRAMES_TOPIC", fields["frames_topic"].default)
            assert meta["bootstrapServers"] == cm["INSPECTOR_KAFKA_BOOTSTRAP_SERVERS"]
            auth = trig.get("authenticationRef")
            if auth:
                ta = one("TriggerAuthentication", auth["name"])
                secrets = {d["metadata"]["name"]: {**(d.get("stringData") or {}), **(d.get("data") or {})}
                           for d in k8s_kind("Secret")}
                for ref in ta["spec"]["secretTargetRef"]:
                    assert ref["key"] in secrets[ref["name"]], f"TriggerAuthentication needs {ref['key']}"
    for hpa in hpas:
        assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]


def test_trainer_cronjob():
    cron = one("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    containers = k8s_containers(cron)
    argv = [" ".join([*(c.get("command") or []), *(c.get("args") or [])]) for c in containers]
    assert any(re.search(r"\btrainer\b.*\brefresh\b.*--model", a) for a in argv), argv


def test_volume_claims_exist():
    claims = {d["metadata"]["name"] for d in k8s_kind("PersistentVolumeClaim")}
    assert len(claims) >= 2
    for doc in [worker_deployment(), one("CronJob")]:
        spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
        for vol in spec["template"]["spec"].get("volumes", []):
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in claims


def _mount_dir(container: dict, volume: str) -> str | None:
    return next((m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] == volume), None)


def test_signing_keys_public_to_the_workers_private_to_the_refresh_only():
    """The workers trust a key mounted from the generated ConfigMap; the private key's Secret is
    mounted in the trainer's refresh container and nowhere else; the settings point at both."""
    kust = load_docs(K8S / "kustomization.yaml")[0]
    cm_gen = {g["name"]: g["files"] for g in kust["configMapGenerator"]}
    secret_gen = {g["name"]: g["files"] for g in kust["secretGenerator"]}
    worker = worker_deployment()
    pod = worker["spec"]["template"]["spec"]
    by_name = {v["name"]: v for v in pod["volumes"]}
    keys_vol = next(n for n, v in by_name.items() if "configMap" in v)
    assert by_name[keys_vol]["configMap"]["name"] in cm_gen
    (serve,) = [c for c in k8s_containers(worker) if "serve" in (c.get("args") or [])]
    pub = Path(cm_gen[by_name[keys_vol]["configMap"]["name"]][0]).name
    assert configmap()["INSPECTOR_MODEL_TRUSTED_KEYS"] == f"{_mount_dir(serve, keys_vol)}/{pub}"
    assert not any("secret" in v for v in pod["volumes"]), "a worker must never mount a signing key"

    cron = one("CronJob")
    cpod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (secret_vol,) = [v for v in cpod["volumes"] if "secret" in v]
    assert secret_vol["secret"]["secretName"] in secret_gen
    mounted = {c["name"]: _mount_dir(c, secret_vol["name"]) for c in k8s_containers(cron)}
    assert [n for n, d in mounted.items() if d] == ["refresh"], mounted
    key = Path(secret_gen[secret_vol["secret"]["secretName"]][0]).name
    assert configmap()["TRAINER_SIGNING_KEY"] == f"{mounted['refresh']}/{key}"


def test_compose_signing_key_reaches_trainers_only():
    services = compose()["services"]
    keygen = services["signing-keys"]
    assert "trainer keygen" in " ".join(keygen["command"])
    for name, svc in services.items():
        vols = [str(v) for v in svc.get("volumes", [])]
        env = service_env(svc)
        if any(v.startswith("signing-key:") for v in vols) and name != "signing-keys":
            assert "TRAINER_SIGNING_KEY" in env and "serve" not in (svc.get("command") or []), name
        if "serve" in (svc.get("command") or []):
            assert any(v.startswith("trusted-keys:") and v.endswith(":ro") for v in vols), name
            assert env["INSPECTOR_MODEL_TRUSTED_KEYS"].startswith("/etc/inspector/keys/"), name
            assert not any(v.startswith("signing-key:") for v in vols), name
        if "refresh" in " ".join(str(c) for c in (svc.get("command") or [])):
            assert any(v.startswith("signing-key:") for v in vols), f"{name} publishes updates unsigned"


# ---------------------------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------------------------

def test_compose_kafka_is_kraft():
    services = compose()["services"]
    for name, svc in services.items():
        assert "zookeeper" not in name.lower() and "zookeeper" not in str(svc.get("image", "")).lower()
    kafka = services["kafka"]
    assert str(kafka["image"]).startswith("apache/kafka:")
    env = service_env(kafka)
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS")
    assert not any("ZOOKEEPER" in k for k in env)


def test_compose_creates_the_topics_the_settings_name():
    services = compose()["services"]
    script = " ".join(str(x) for svc in services.values() if "kafka-topics" in str(svc.get("command", ""))
                      for x in (svc["command"] if isinstance(svc["command"], list) else [svc["command"]]))
    assert script, "no service creates the topics"
    topics: dict[str, str] = {}
    for line in re.sub(r"\\\n\s*", " ", script).splitlines():
        m = re.search(r"--topic\s+(\S+)(.*)", line)
        if m:
            topics[m.group(1)] = topics.get(m.group(1), "") + m.group(2)
    f = Settings.model_fields
    wanted = [f["frames_topic"].default, f["verdicts_topic"].default, f["dlq_topic"].default,
              f["models_topic"].default, "frames.normal"]
    if importlib.util.find_spec("trainer.settings") is not None:
        tf = trainer_settings_model().model_fields
        wanted += [tf["normal_topic"].default, tf["models_topic"].default]
    missing = [t for t in wanted if t not in topics]
    assert missing == [], f"topics not created: {missing}"
    assert "cleanup.policy=compact" in topics[f["models_topic"].default]


def test_compose_redis_is_bounded_and_not_persistent():
    cmd = [interpolate(str(x)) for x in compose()["services"]["redis"]["command"]]
    assert "--maxmemory" in cmd and cmd[cmd.index("--maxmemory") + 1]
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert cmd[cmd.index("--save") + 1] == "" and cmd[cmd.index("--appendonly") + 1] == "no"


def published_host_ips(port: Any) -> str | None:
    """The host IP of one compose `ports` entry (None: published on every interface)."""
    if isinstance(port, dict):
        return port.get("host_ip")
    text = interpolate(str(port))
    if text.startswith("["):
        return text[1:text.index("]")]
    parts = text.split(":")
    return parts[0] if len(parts) == 3 else None


def test_compose_ports_bind_loopback_only():
    assert published_host_ips("9464:9464") is None and published_host_ips("127.0.0.1:1-2:3") == "127.0.0.1"
    published = 0
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            published += 1
            assert published_host_ips(port) == "127.0.0.1", f"{name}: port {port!r} is not bound to 127.0.0.1"
    assert published


def test_compose_worker_gpu_cpu_fallback_and_health():
    services = compose()["services"]
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    cpu = [svc for svc in services.values() if svc.get("command") == ["serve"] and svc.get("profiles")
           and service_env(svc).get("INSPECTOR_DEVICE") == "cpu"]
    assert cpu and "deploy" not in cpu[0], "expected a CPU worker in a profile, without a GPU reservation"
    for need in ("kafka", "redis"):
        assert worker["depends_on"][need]["condition"] == "service_healthy"
    port = int(service_env(worker)["INSPECTOR_HTTP_PORT"])
    assert str(port) in " ".join(worker["healthcheck"]["test"])
    assert all(str(p).endswith(f":{port}") for p in worker["ports"])


def test_compose_health_conditions_have_healthchecks():
    services = compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep, cond in (deps.items() if isinstance(deps, dict) else []):
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond.get("condition") == "service_healthy":
                hc = services[dep].get("healthcheck") or {}
                assert hc.get("test") and not hc.get("disable"), f"{name} waits for {dep} healthy, which has no healthcheck"


def test_compose_profiles_and_volumes():
    doc = compose()
    services = doc["services"]
    profiles = {p for svc in services.values() for p in svc.get("profiles", [])}
    assert {"schedule", "oneshot", "demo"} <= profiles
    demo_cmds = [svc.get("command") for svc in services.values() if "demo" in svc.get("profiles", [])]
    assert any(isinstance(c, list) and c and c[0] == "publish" for c in demo_cmds), "demo needs a camera (publish)"
    assert any(isinstance(c, list) and c and c[0] == "tail" for c in demo_cmds), "demo needs a verdict tail"
    declared = set(doc.get("volumes") or {})
    assert {"checkpoints", "normal-store"} <= declared
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol["source"] if isinstance(vol, dict) else str(vol).split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_compose_dollars_are_escaped():
    """A lone $VAR is interpolated by compose (empty when unset): shell variables need $$VAR."""
    bad = [ln.strip() for ln in COMPOSE.read_text().splitlines()
           if not ln.lstrip().startswith("#") and re.search(r"(?<!\$)\$(?![{$])", ln.replace("$$", ""))]
    assert bad == []


# ---------------------------------------------------------------------------------------------
# the commands the files run exist (CLI parsers) and the inline Python names real things
# ---------------------------------------------------------------------------------------------

def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {c for a in parser._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices}


def shell_invocations(script: str, program: str) -> list[list[str]]:
    out = []
    for line in re.sub(r"\\\n\s*", " ", script).splitlines():
        m = re.match(rf"\s*(?:exec\s+)?{program}\s+(.*?)(?:\s*(?:\|\||&&|;|\|).*)?$", line)
        if m:
            out.append(shlex.split(re.sub(r"\$\{?\(?[A-Za-z_]\w*\)?\}?", "X", m.group(1))))
    return out


def invocations(program: str) -> list[tuple[str, list[str]]]:
    """(where, argv) of every run of `program` in compose and the Kubernetes manifests."""
    found = []
    for name, svc in compose()["services"].items():
        if not str(svc.get("image", "")).startswith("${LINE_INSPECTOR_IMAGE") and "build" not in svc:
            continue
        entry = svc.get("entrypoint") or ["inspector"]
        cmd = [interpolate(str(x)) for x in (svc.get("command") or [])]
        if " ".join(entry) == program:
            found.append((f"compose:{name}", cmd))
        elif entry[0] in ("/bin/sh", "sh", "/bin/bash", "bash"):
            for argv in shell_invocations(interpolate(" ".join(cmd) if len(cmd) > 1 else cmd[0]), program):
                found.append((f"compose:{name}", argv))
    for doc in k8s_kind("Deployment") + k8s_kind("CronJob"):
        for c in k8s_containers(doc):
            command = c.get("command") or ["inspector"]
            if command == [program]:
                found.append((f"k8s:{doc['metadata']['name']}/{c['name']}",
                              [re.sub(r"\$\([A-Za-z_]\w*\)", "X", a) for a in c.get("args", [])]))
    return found


def parse_all(program: str, parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    known = subcommands(parser)
    errors, unregistered = [], []
    for where, argv in invocations(program):
        sub = next((a for a in argv if not a.startswith("-")), None)
        if sub not in known:
            unregistered.append(f"{where}: {program} {sub}")
            continue
        try:
            parser.parse_args(argv)
        except SystemExit:
            errors.append(f"{where}: {program} {' '.join(argv)}")
    return errors, unregistered


def test_inspector_commands_parse():
    from inspector.cli import build_parser

    runs = invocations("inspector")
    assert {argv[0] for _, argv in runs} >= {"serve"}
    errors, unregistered = parse_all("inspector", build_parser())
    assert errors == [] and unregistered == []


def test_devtools_commands_parse():
    """The demo profile's camera and tail run the dev tools, mounted beside the serving image."""
    from devtools.__main__ import build_parser

    runs = invocations("python -m devtools")
    assert {argv[0] for _, argv in runs} >= {"publish", "tail"}
    errors, unregistered = parse_all("python -m devtools", build_parser())
    assert errors == [] and unregistered == []
    for name in ("camera", "demo-tail"):
        svc = compose()["services"][name]
        assert "./devtools:/opt/devtools/devtools:ro" in svc["volumes"]
        assert svc["environment"]["PYTHONPATH"] == "/opt/devtools"


def test_serving_image_holds_only_what_serves():
    """deploy/Dockerfile copies the serving and training packages, never the dev tools, tests or benches."""
    copied = {rest.split()[0].rstrip("/") for w, rest in dockerfile_instructions() if w == "COPY" and "--from" not in rest}
    assert {"inspector", "trainer"} <= copied
    assert not copied & {"devtools", "tests", "bench", "deploy", "docs", "."}


def test_trainer_commands_parse():
    from trainer.cli import build_parser

    runs = invocations("trainer")
    assert any("refresh" in argv for _, argv in runs), "no `trainer refresh` in compose or the CronJob"
    parser = build_parser()
    not_in_cli = sorted({"collect", "refresh"} - subcommands(parser))
    if not_in_cli and importlib.util.find_spec("trainer.commands") is not None:
        # check the flags against trainer/commands.py's parsers even before trainer/cli.py adds them
        from trainer.commands import register

        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        register(sub)
    errors, unregistered = parse_all("trainer", parser)
    assert errors == [], f"these trainer invocations do not parse: {errors}"
    assert unregistered == [], f"unknown trainer subcommands: {unregistered}"
    if not_in_cli:
        pytest.skip(f"flags checked against trainer/commands.py, but trainer/cli.py does not register {not_in_cli} "
                    "yet, so `trainer collect|refresh` in compose and the CronJob cannot run")


def check_python_snippet(code: str, where: str) -> None:
    tree = ast.parse(code, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("inspector", "trainer"):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert missing == [], f"{where}: {node.module} has no {missing}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("inspector", "trainer"):
                    importlib.import_module(alias.name)


def test_compose_inline_python_names_real_things():
    snippets = []
    for name, svc in compose()["services"].items():
        cmd = svc.get("command")
        text = interpolate("\n".join(cmd) if isinstance(cmd, list) else str(cmd or ""))
        snippets += [(name, m) for m in re.findall(r'python -c "(.*?)"', text, flags=re.S)]
    for name, code in snippets:
        check_python_snippet(code, f"compose:{name}")
