"""Retrieval stage."""

import tfrs_pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
