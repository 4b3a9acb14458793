"""Helpers of the bench sections and report: the raw train/test frames,
ratios, medians, Markdown tables, machine facts and the section runner."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
import traceback
from typing import Callable, Dict, List

import pandas as pd

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

from data import raw, splits
from tfrs_pipeline import runs


@dataclasses.dataclass
class Frames:
  """Train/test ratings as DataFrames (the same rows as the TFDS splits)."""
  train: pd.DataFrame
  test: pd.DataFrame
  movie_ids: List[str]


def load_frames(data_config) -> Frames:
  raw_dir = raw.resolve_raw_dir(data_config.raw_data)
  if raw_dir is None:
    raise raw.MissingDataError("the bench reads the real raw files. "
                               + raw.HOW_TO_SUPPLY)
  data = raw.load_raw(raw_dir, data_config.on_bad_line)
  examples = raw.ratings_examples(data)
  test = splits.test_mask(data.ratings, data_config.split)
  return Frames(train=examples[~test].reset_index(drop=True),
                test=examples[test].reset_index(drop=True),
                movie_ids=list(data.movies.movie_id))


def ratio(a: float, b: float) -> float:
  return float(a) / float(b) if b else float("nan")


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
  if isinstance(v, int):
    return f"{v:,}"
  return str(v)


def markdown_table(rows: List[Dict], columns: List[str]) -> str:
  lines = ["| " + " | ".join(columns) + " |",
           "|" + "---|" * len(columns)]
  for row in rows:
    lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns)
                 + " |")
  return "\n".join(lines)


def machine() -> Dict[str, object]:
  return {
      "platform": platform.platform(),
      "python": platform.python_version(),
      "cpus": os.cpu_count(),
      "tensorflow": tf.__version__,
      "load_average_at_start": os.getloadavg()[0],
  }


def median(values) -> float:
  return float(statistics.median(values))


def run_sections(sections: Dict[str, Callable[[], Dict]], names: List[str],
                 on_done: Callable[[str, Dict], None], log=print) -> None:
  """Runs each section; a failing section is recorded, not fatal."""
  for name in names:
    log(f"[bench] === {name} ===")
    started = time.strftime("%FT%T%z")
    with runs.Timer() as t:
      try:
        result = sections[name]()
      except Exception as e:  # pylint: disable=broad-except
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"}
    result["section_seconds"] = t.seconds
    result["measured_at"] = started
    log(f"[bench] {name} done in {t.seconds:.0f} s")
    on_done(name, result)
