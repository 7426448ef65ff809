#!/usr/bin/env bash
# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
#
# The sglang contract environment: .venv/sglang-contract, a venv that sees the main venv's
# packages (torch, numpy, pillow, ...) through a .pth file and adds the pinned sglang wheel
# (--no-deps) plus the modules its request path imports (requirements/sglang-contract.txt).
# Its interpreter runs test/fixtures/sglang_contract.py in a subprocess; nothing of it reaches
# the main venv. Called by scripts/setup_venv.sh; idempotent (stamped).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${ROOT}/.venv"
SIDE="${VENV}/sglang-contract"
SGLANG_VERSION="0.5.23"  # the version the contract is proven against (docs/ENGINES.md)
REQUIREMENTS="${ROOT}/requirements/sglang-contract.txt"
STAMP="${VENV}/.stamps/sglang-contract"
PIP_FLAGS=(--disable-pip-version-check --no-input -q)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
if [[ -f "${STAMP}" && ! "${REQUIREMENTS}" -nt "${STAMP}" && ! "$0" -nt "${STAMP}" \
      && -x "${SIDE}/bin/python" ]]; then
  exit 0
fi
log "building the sglang ${SGLANG_VERSION} contract environment (${SIDE})"
started=$(date +%s)
rm -rf "${SIDE}"
BASE_PY="$("${VENV}/bin/python" -c 'import sys; print(sys.base_prefix)')/bin/python3"
"${BASE_PY}" -m venv "${SIDE}"
SIDE_SP="$("${SIDE}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
MAIN_SP="$("${VENV}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# Appended after the side env's own site-packages, so its pins win; the main venv's .pth files
# (the ROS bootstrapper, the editable install) are not run from there.
echo "${MAIN_SP}" > "${SIDE_SP}/zz_main_venv.pth"
"${SIDE}/bin/python" -m pip install "${PIP_FLAGS[@]}" --no-deps "sglang==${SGLANG_VERSION}" \
  2>&1 | grep -v -E '^WARNING: Location|is ignored' || true
# pip sees the main venv's packages through the .pth; it reports sglang's unmet CUDA
# dependencies, which is expected.
"${SIDE}/bin/python" -m pip install "${PIP_FLAGS[@]}" -r "${REQUIREMENTS}" 2>&1 \
  | grep -v -E "^WARNING: Location|is ignored|^sglang .* requires|incompatible|pip's dependency resolver" || true
"${SIDE}/bin/python" -c "import sglang.srt.entrypoints.openai.protocol, sglang.srt.server_args" \
  2>/dev/null || { echo "[setup] the sglang contract environment does not import" >&2; exit 1; }
mkdir -p "$(dirname "${STAMP}")"
touch "${STAMP}"
log "sglang contract environment ready in $(( $(date +%s) - started )) s ($(du -sh "${SIDE}" | cut -f1))"
