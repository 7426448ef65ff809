# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Long-running soak tests; they run only with SPATIAL_VLM_SOAK=1 (``make soak``)."""
