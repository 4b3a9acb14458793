"""The bench's `zoo` section: every model in two tables, same run, same split.

- Top-N table: precision/recall/MAP/NDCG @10 and @20 (train movies
  excluded) and fit time of the two-tower (read from the retrieval
  section), the joint model, NeuMF on implicit feedback (BPR and log
  loss), content-based, item-kNN, user-kNN, EASE (lambda chosen on a
  validation split carved from train) and popularity.
- Ranking table: RMSE, MAE, Spearman, liked AUC and fit time of every
  `ranking.model.MODELS` entry and the ablations (read from the ranking
  section), its NDCG@10 as the two-stage ranker (read from the e2e
  section), the joint model's rating head, global mean and biased MF.

Tables are built from the sections' results in the same report
(`Context.report`), so the zoo retrains nothing those sections trained; a
model not registered (or a section not run) is listed as skipped with the
reason, not a crash.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pandas as pd

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
from data import raw
from ranking import model as kmodel
from ranking import train as ktrain
from retrieval import baselines as rb
from retrieval import classical
from retrieval import model as rmodel
from retrieval import train as rtrain
from tfrs_pipeline.app import bench_common

TOP_N_KEYS = [f"{name}_at_{k}" for k in (10, 20)
              for name in ("precision", "recall", "map", "ndcg")]
TOP_N_COLUMNS = ["name"] + TOP_N_KEYS + ["seconds"]
RANKING_COLUMNS = ["name", "rmse", "mae", "spearman", "liked_auc",
                   "two_stage_ndcg_at_10", "seconds"]
# Ablations of the ranking section: (name, base model, config field).
ABLATIONS = (("widedeep_no_wide", "widedeep", "wide"),
             ("deepfm_no_fm", "deepfm", "fm"))
NEUMF_LOSSES = ("bpr", "logloss")
EASE_L2 = (100.0, 300.0, 1000.0, 3000.0)


def ranking_configs(base: kmodel.RankingConfig
                    ) -> Dict[str, kmodel.RankingConfig]:
  """The ranking section's models: every registered name, then each
  ablation whose model and config field exist."""
  out = {name: dataclasses.replace(base, model=name)
         for name in kmodel.MODELS}
  fields = {f.name for f in dataclasses.fields(base)}
  for name, model, field in ABLATIONS:
    if model in kmodel.MODELS and field in fields:
      out[name] = dataclasses.replace(base, model=model, **{field: False})
  return out


def _pick(m: Dict[str, Any], keys: List[str]) -> Dict[str, float]:
  return {k: float(m[k]) for k in keys if m.get(k) is not None}


def _row(name: str, m: Dict[str, Any], seconds) -> Dict[str, Any]:
  return {"name": name, **_pick(m, TOP_N_KEYS), "seconds": seconds}


# --------------------------------------------------------------------------
# Top-N.


def classical_rows(frames: bench_common.Frames, movies: pd.DataFrame,
                   ease_l2=EASE_L2, **knn_grid) -> Tuple[List[Dict], Dict]:
  """Content-based, kNN, EASE and popularity rows on test, and the
  validation figures that chose the kNN settings and EASE's lambda."""
  f = frames
  rows, validation = [], {}
  names = {"content_based": "content-based", "item_knn": "item-kNN",
           "user_knn": "user-kNN"}
  for key, r in classical.evaluate_all(f.train, f.test, movies, f.movie_ids,
                                       **knn_grid).items():
    label = names[key]
    if "k" in r["params"]:
      label += f" (k={r['params']['k']}, shrinkage={r['params']['shrinkage']:g})"
      validation[key] = r["params"]["validation"]
    rows.append(_row(label, r["metrics"], r["seconds"]))
  start = time.time()
  held = classical.validation_mask(f.train)
  sweep = rb.ease_sweep(f.train[~held], f.train[held], f.movie_ids,
                        ease_l2, verbose=False)
  validation["ease"] = [{"l2": l2, classical.SELECTION_KEY: m[
      classical.SELECTION_KEY]} for l2, m, _ in sweep]
  l2 = max(sweep, key=lambda r: r[1][classical.SELECTION_KEY])[0]
  m, _ = rb.ease(f.train, f.test, f.movie_ids, l2, verbose=False)
  rows.append(_row(f"EASE (lambda={l2:g})", m, time.time() - start))
  m, s = rb.popularity(f.train, f.test, f.movie_ids)
  rows.append(_row("popularity", m, s))
  return rows, validation


def neumf_configs() -> Tuple[Dict[str, kmodel.RankingConfig], List[str]]:
  """NeuMF on implicit feedback per loss, or why it is skipped."""
  fields = {f.name for f in dataclasses.fields(kmodel.RankingConfig)}
  if "neumf" not in kmodel.MODELS or "neumf_loss" not in fields:
    return {}, ["NeuMF (implicit feedback): skipped, `neumf` is not in "
                "ranking.model.MODELS (or RankingConfig has no neumf_loss)"]
  return {f"NeuMF ({loss})": kmodel.RankingConfig(
      model="neumf", neumf_loss=loss, examples="ratings")
          for loss in NEUMF_LOSSES}, []


def two_tower_row(report: Dict[str, Any]) -> Tuple[List[Dict], List[str]]:
  r = report.get("retrieval", {})
  if "model" not in r:
    return [], ["two-tower: skipped, no retrieval section in this report "
                "(run `--sections retrieval,zoo`)"]
  m = r["model"]
  return [_row("two-tower (retrieval section)", m,
               m.get("training_seconds"))], []


# --------------------------------------------------------------------------
# Ranking.


def ranking_rows(report: Dict[str, Any], joint: Optional[Dict] = None
                 ) -> Tuple[List[Dict], List[str]]:
  """The ranking table from the ranking and e2e sections' results."""
  k = report.get("ranking", {})
  models = k.get("models", {})
  methods = report.get("e2e", {}).get("quality", {}).get("methods", {})
  rows, notes = [], []
  names = list(kmodel.MODELS) + [a[0] for a in ABLATIONS
                                 if a[1] in kmodel.MODELS]
  for name in names:
    m = models.get(name)
    if m is None:
      notes.append(f"{name}: skipped, not in this report's ranking section")
      continue
    row = {"name": name, **_pick(m, RANKING_COLUMNS[1:5]),
           "seconds": m.get("train_seconds")}
    stage = methods.get(f"two_stage/{name}")
    if stage is not None:
      row["two_stage_ndcg_at_10"] = stage["ndcg_at_10"]
    elif name in kmodel.MODELS:
      notes.append(f"{name}: no two-stage NDCG@10 (not in this report's "
                   "e2e section)")
    rows.append(row)
  if joint is not None:
    rows.append({"name": "joint (rating head)",
                 **_pick(joint, RANKING_COLUMNS[1:5]),
                 "seconds": joint.get("training_seconds")})
  for peer in k.get("rows", []):
    if peer["name"].startswith(("global mean", "biased MF")):
      rows.append({c: peer.get(c) for c in RANKING_COLUMNS})
  return rows, notes


# --------------------------------------------------------------------------
# The section and its Markdown.


def zoo_section(ctx) -> Callable[[], Dict]:
  """`ctx`: `bench_sections.Context` (frames, data config, report)."""
  def run():
    f = ctx.frames
    notes: List[str] = []
    top_n, more = two_tower_row(ctx.report)
    notes += more
    joint_config = rmodel.RetrievalConfig(model="joint", examples="rating")
    joint = rtrain.train_and_evaluate(joint_config, ctx.data_config,
                                      ctx.fresh_run_dir("zoo_joint"))
    top_n.append(_row("joint (retrieval + rating)", joint,
                      joint.get("training_seconds")))
    configs, more = neumf_configs()
    notes += more
    rating_data = dataclasses.replace(ctx.data_config, label_share=0.0)
    for name, config in configs.items():
      m = ktrain.train_and_evaluate(
          config, rating_data,
          ctx.fresh_run_dir("zoo_neumf_" + config.neumf_loss))
      top_n.append(_row(name, m, m.get("train_seconds")))
    movies = raw.load_raw(raw.resolve_raw_dir(ctx.data_config.raw_data),
                          ctx.data_config.on_bad_line).movies
    rows, validation = classical_rows(f, movies)
    top_n += rows
    ranking, more = ranking_rows(ctx.report, joint)
    notes += more
    return {"top_n": top_n, "ranking": ranking, "notes": notes,
            "validation": validation,
            "joint_config": dataclasses.asdict(joint_config)}
  return run


def markdown(z: Dict[str, Any], when: str = "") -> List[str]:
  """The section's Markdown lines; `when`: the measured-at line."""
  lines = [
      "## Model zoo (test split, same run)", "", when,
      "Top-N: per user, train movies excluded, relevant = the user's test "
      "movies, all movies as candidates. kNN k/shrinkage and EASE's lambda "
      "chosen on a validation split carved from train (NDCG@10; the "
      "figures are in report.json under zoo.validation). Seconds: fit "
      "(and, for the peers, selection and evaluation).", "",
      bench_common.markdown_table(z["top_n"], TOP_N_COLUMNS), "",
      "Ranking: rating prediction on the test split (trained on ratings, "
      "from the ranking section); two_stage_ndcg_at_10: the model as the "
      "ranker of the two-stage path (e2e section).", "",
      bench_common.markdown_table(z["ranking"], RANKING_COLUMNS), ""]
  if z.get("notes"):
    lines += ["Skipped:", ""] + [f"- {n}" for n in z["notes"]] + [""]
  return lines
