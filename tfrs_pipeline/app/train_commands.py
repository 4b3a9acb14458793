"""`tfrs-pipeline train retrieval|sources|ranking|all`.

    tfrs-pipeline train retrieval --run_dir runs/retrieval [--epochs ...]
    tfrs-pipeline train sources --sources_run runs/sources
    tfrs-pipeline train ranking --run_dir runs/ranking \
        --retrieval_run runs/retrieval [--model mmoe|dcn]
    tfrs-pipeline train all --runs runs    # retrieval, sources, ranking

`train ranking` trains the ranker on candidate lists (README, "Two
stages"): it needs a retrieval run trained with the same data flags
(`--label_share`, `--seed`); `--examples ratings` trains the pointwise
rating model instead (no sources). `train all` runs the three in order
with their default configurations, which is what `make train` does.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from absl import flags

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
from ranking import train as ranking_train
from ranking.model import RankingConfig
from retrieval import train as retrieval_train
from retrieval.model import RetrievalConfig
from tfrs_pipeline import errors, export_layout, pipeline
from tfrs_pipeline.app import cascade
from tfrs_pipeline.app import flags as common

FLAGS = flags.FLAGS  # defined by flag_specs (train_retrieval, ...)


def _cascade_config() -> cascade.CascadeConfig:
  return common.config_from_flags(cascade.CascadeConfig)


def retrieval_main(argv) -> None:
  del argv
  config = common.config_from_flags(RetrievalConfig)
  retrieval_train.train_and_evaluate(config, common.data_config(),
                                     FLAGS.run_dir)


def _export_dir(retrieval_run: str) -> str:
  """The newest complete version of the retrieval run's export."""
  base = export_layout.run_export(retrieval_run)
  try:
    return export_layout.latest(base)
  except errors.MissingError:
    raise errors.MissingError(
        f"no retrieval export in {base}: run `tfrs-pipeline train "
        "retrieval` first (or make train)") from None


def ranking_main(argv) -> None:
  del argv
  config = common.config_from_flags(RankingConfig)
  data_config = common.data_config()
  if config.examples == "ratings":
    ranking_train.train_and_evaluate(config, data_config, FLAGS.run_dir)
    return
  train_ranking(config, _cascade_config(), data_config, FLAGS.run_dir,
                _export_dir(FLAGS.retrieval_run))


def train_ranking(config: RankingConfig, cascade_config: cascade.CascadeConfig,
                  data_config: pipeline.DataConfig, run_dir: str,
                  retrieval_export: str, log=print) -> dict:
  data_config = ranking_train.ranking_data_config(config, data_config)
  data = pipeline.load_data(data_config, log=log)
  return cascade.train_ranker(data, retrieval_export, run_dir, config,
                              cascade_config, log)


def sources_main(argv) -> None:
  del argv
  data_config = common.data_config()
  data = pipeline.load_data(data_config)
  cascade.train_sources(data, data_config, FLAGS.sources_run,
                        _cascade_config())


def train_all(runs: str, data_config: pipeline.DataConfig,
              retrieval_config: Optional[RetrievalConfig] = None,
              ranking_config: Optional[RankingConfig] = None,
              cascade_config: Optional[cascade.CascadeConfig] = None,
              log=print) -> dict:
  """Retrieval, sources and ranker (defaults: the shipped configurations,
  seeded with the data seed) into RUNS/{retrieval,sources,ranking};
  returns each part's seconds."""
  seconds = {}
  start = time.time()
  retrieval_train.train_and_evaluate(
      retrieval_config or RetrievalConfig(seed=data_config.seed),
      data_config, os.path.join(runs, "retrieval"), log=log)
  seconds["retrieval"] = time.time() - start
  config = ranking_config or RankingConfig(seed=data_config.seed)
  cascade_config = cascade_config or cascade.CascadeConfig()
  start = time.time()
  data = pipeline.load_data(
      ranking_train.ranking_data_config(config, data_config), log=log)
  seconds["data"] = time.time() - start
  start = time.time()
  cascade.train_sources(data, data_config, os.path.join(runs, "sources"),
                        cascade_config, log)
  seconds["sources"] = time.time() - start
  start = time.time()
  cascade.train_ranker(data, _export_dir(os.path.join(runs, "retrieval")),
                       os.path.join(runs, "ranking"), config,
                       cascade_config, log)
  seconds["ranking"] = time.time() - start
  log("[train] done: " + ", ".join(f"{k} {v:.0f}s"
                                    for k, v in seconds.items()))
  return seconds


def all_main(argv) -> None:
  del argv
  train_all(FLAGS.runs, common.data_config())
