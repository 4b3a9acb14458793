"""`make bench`: quality and speed on the real data, beside the baselines.

Every figure in the report is measured in this process, in this run: the
trained models and the peers they are compared with see the same data and
split. Writes `OUT/report.json`, `OUT/report.md` and plots (PNG) beside
them; trained models go under `OUT/runs/`.

Sections (`--sections`, default all):
  retrieval  two-tower model vs popularity, EASE (lambda sweep) and the
             TFRS-tutorial two-tower; ScaNN vs brute force on the movies.
  index      ScaNN vs brute force on >= 1,000,000 synthetic vectors:
             recall/speed trade-off table and plot.
  ranking    DCN-v2 and MMoE vs global mean, biased MF and the
             TFRS-tutorial DCN (several seeds).
  e2e        two-stage NDCG@10 / recall@10 (retrieval alone vs retrieval
             then ranking) and `/recommend` latency under load.

Latencies are medians (p50) and p99 over repeated calls; quality figures
are single runs unless seeds are listed. The machine is noisy: compare
ratios measured in the same report.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Callable, Dict, List

from absl import flags

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
from data import raw, splits
from tfrs_pipeline import flags as common
from tfrs_pipeline import runs

FLAGS = flags.FLAGS
SECTIONS = ("retrieval", "index", "ranking", "e2e")
flags.DEFINE_string("out_dir", "bench", "Where report.{json,md} go.")
flags.DEFINE_list("sections", list(SECTIONS), "Sections to run.")
flags.DEFINE_integer("synthetic_vectors", 1_000_000,
                     "index: size of the synthetic corpus.")
flags.DEFINE_list("ease_l2", ["100", "250", "500", "1000", "3000", "10000"],
                  "retrieval: EASE lambdas to sweep.")
flags.DEFINE_list("tutorial_epochs", ["5"],
                  "retrieval: epochs of the TFRS-tutorial two-tower (add 32 "
                  "to see it overfit; ~10 min more on 2 cores).")
flags.DEFINE_integer("dcn_tutorial_seeds", 3,
                     "ranking: seeds of the TFRS-tutorial DCN.")
flags.DEFINE_integer("load_requests", 400, "e2e: /recommend requests.")
flags.DEFINE_integer("load_concurrency", 8, "e2e: concurrent clients.")
flags.DEFINE_float("e2e_holdout_users", 0.1,
                   "e2e: share of the users with ratings left out of every "
                   "fit (evaluated as new users).")


@dataclasses.dataclass
class Frames:
  """Train/test ratings as DataFrames (the same rows as the TFDS splits)."""
  train: "pd.DataFrame"  # noqa: F821
  test: "pd.DataFrame"  # noqa: F821
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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
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
        import traceback  # pylint: disable=g-import-not-at-top
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"}
    result["section_seconds"] = t.seconds
    result["measured_at"] = started
    log(f"[bench] {name} done in {t.seconds:.0f} s")
    on_done(name, result)


def main(argv):
  del argv
  # Filled in by the stage sections below (see bench_sections.py).
  from tfrs_pipeline import bench_sections  # pylint: disable=g-import-not-at-top
  data_config = common.data_config()
  unknown = set(FLAGS.sections) - set(SECTIONS)
  if unknown:
    from tfrs_pipeline.cli import UsageError  # pylint: disable=g-import-not-at-top
    raise UsageError(f"unknown bench sections {sorted(unknown)}; choose from "
                     f"{SECTIONS}")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  report = {"machine": machine(), "started_at": time.strftime("%FT%T%z"),
            "data_config": dataclasses.asdict(data_config)}
  ctx = bench_sections.Context(data_config=data_config,
                               out_dir=FLAGS.out_dir, flags=FLAGS)
  sections = {name: getattr(bench_sections, f"{name}_section")(ctx)
              for name in SECTIONS}
  ordered = [s for s in SECTIONS if s in FLAGS.sections]
  previous = os.path.join(FLAGS.out_dir, "report.json")
  if os.path.exists(previous) and len(ordered) < len(SECTIONS):
    # Re-running some sections keeps the others from the last report.
    report.update({k: v for k, v in runs.read_json(previous).items()
                   if k in SECTIONS and k not in ordered})

  def write(name, result):
    report[name] = result
    report["finished_at"] = time.strftime("%FT%T%z")
    runs.write_json(previous, report)
    with open(os.path.join(FLAGS.out_dir, "report.md"), "w") as f:
      f.write(bench_sections.render_markdown(report))

  run_sections(sections, ordered, write)
  with open(os.path.join(FLAGS.out_dir, "report.md")) as f:
    print(f.read())
  print(f"[bench] wrote {previous} and report.md")


