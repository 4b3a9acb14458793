"""Enriched MovieLens-1M: raw readers, splits, TFDS builder, EDA."""

import tfrs_pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
