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
  zoo        every model in two tables (`bench_zoo.py`): top-N (two-tower,
             joint, NeuMF, content-based, item/user-kNN, EASE, popularity)
             and ranking (every ranking model and ablation, from the
             ranking and e2e sections of the same report).

Latencies are medians (p50) and p99 over repeated calls; quality figures
are single runs unless seeds are listed. The machine is noisy: compare
ratios measured in the same report.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import flags

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
from tfrs_pipeline import errors, runs
from tfrs_pipeline.app import bench_common, bench_sections
from tfrs_pipeline.app import flags as common

FLAGS = flags.FLAGS
SECTIONS = ("retrieval", "index", "ranking", "e2e", "zoo")
# The flags: `flag_specs.bench` (defined before this module is imported).


def main(argv):
  del argv
  data_config = common.data_config()
  unknown = set(FLAGS.sections) - set(SECTIONS)
  if unknown:
    raise errors.ConfigError(f"unknown bench sections {sorted(unknown)}; choose from "
                     f"{SECTIONS}")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  report = {"machine": bench_common.machine(), "started_at": time.strftime("%FT%T%z"),
            "data_config": dataclasses.asdict(data_config)}
  ctx = bench_sections.Context(data_config=data_config,
                               out_dir=FLAGS.out_dir, flags=FLAGS,
                               report=report)
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

  bench_common.run_sections(sections, ordered, write)
  with open(os.path.join(FLAGS.out_dir, "report.md")) as f:
    print(f.read())
  print(f"[bench] wrote {previous} and report.md")


