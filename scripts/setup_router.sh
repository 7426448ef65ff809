#!/usr/bin/env bash
# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
#
# The sglang-router side environment (.venv-router/) for test/test_router_live.py and
# bench/bench_router.py: the real router (a Rust binary in a PyPI wheel) as a separate server
# process, the way a deployment runs it. Idempotent: skipped when the pinned version is there.
# Measured on the 2-core dev machine: ~50 s cold (no pip cache), 146 MB.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ENV_DIR="${SPATIAL_VLM_ROUTER_ENV:-${ROOT}/.venv-router}"
REQUIREMENTS="${ROOT}/requirements/router.txt"
PY="${PYTHON:-python3}"
STAMP="${ENV_DIR}/.installed"

log() { printf '\033[1m[setup-router]\033[0m %s\n' "$*"; }

if [[ -f "${STAMP}" && ! "${REQUIREMENTS}" -nt "${STAMP}" && -x "${ENV_DIR}/bin/python" ]]; then
  log "up to date: ${ENV_DIR}"
  exit 0
fi
started=$(date +%s)
log "creating ${ENV_DIR} ($(grep -v '^#' "${REQUIREMENTS}" | xargs))"
rm -rf "${ENV_DIR}"
"${PY}" -m venv "${ENV_DIR}"
"${ENV_DIR}/bin/python" -m pip install --disable-pip-version-check --no-input -q \
  -r "${REQUIREMENTS}" 2>&1 | grep -v '^WARNING: Location' || true
# The Rust router must import, not only the Python launcher (which falls back to a debug-only
# Python load balancer when the native module is missing).
"${ENV_DIR}/bin/python" -c "from sglang_router.router import Router" \
  || { echo "[setup-router] sglang-router did not install (see pip output above)" >&2; exit 1; }
touch "${STAMP}"
log "ready in $(( $(date +%s) - started )) s: ${ENV_DIR} ($(du -sh "${ENV_DIR}" | cut -f1))"
