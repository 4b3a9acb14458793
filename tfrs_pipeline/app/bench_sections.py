"""The sections of `make bench` and the Markdown report (see `bench_common.py`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from typing import Any, Callable, Dict, List

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
from ranking import baselines as kb
from ranking import train as ktrain
from ranking.model import RankingConfig
from retrieval import baselines as rb
from retrieval import index_bench
from retrieval import train as rtrain
from retrieval.model import RetrievalConfig
from tfrs_pipeline import export_layout, metrics, pipeline, runs
from ranking import model as kmodel
from tfrs_pipeline.app import bench_common, bench_zoo, cascade, cascade_eval
from tfrs_pipeline.app import e2e
from tfrs_pipeline.app import train_commands

RETRIEVAL_KEYS = ["top_1_accuracy", "top_5_accuracy", "top_10_accuracy",
                  "top_50_accuracy", "top_100_accuracy", "recall_at_10",
                  "recall_at_20", "recall_at_100", "ndcg_at_10", "ndcg_at_20",
                  "ndcg_at_100", "capped_recall_at_20"]


@dataclasses.dataclass
class Context:
  data_config: pipeline.DataConfig
  out_dir: str
  flags: Any
  report: Dict[str, Any] = dataclasses.field(default_factory=dict)
  """The report being written (earlier sections' results, read by zoo)."""

  def fresh_run_dir(self, name: str) -> str:
    """RUNS/name, emptied first (a benchmark never resumes an old run)."""
    path = os.path.join(self.out_dir, "runs", name)
    shutil.rmtree(path, ignore_errors=True)
    return path

  @functools.cached_property
  def frames(self) -> bench_common.Frames:
    return bench_common.load_frames(self.data_config)


def _pick(m: Dict[str, Any], keys: List[str]) -> Dict[str, float]:
  return {k: float(m[k]) for k in keys if k in m}


# --------------------------------------------------------------------------
# Retrieval.


def retrieval_section(ctx: Context) -> Callable[[], Dict]:
  def run():
    config = RetrievalConfig()
    model = rtrain.train_and_evaluate(config, ctx.data_config,
                                      ctx.fresh_run_dir("retrieval"))
    f = ctx.frames
    rows = [dict(name="two-tower (this project)", seconds=model.get(
        "training_seconds"), **_pick(model, RETRIEVAL_KEYS))]
    pop, pop_s = rb.popularity(f.train, f.test, f.movie_ids)
    pop_capped, _ = rb.popularity(f.train, f.test, f.movie_ids,
                                  capped_recall=True)
    pop["capped_recall_at_20"] = pop_capped["recall_at_20"]
    l2_values = [float(x) for x in ctx.flags.ease_l2]
    sweep = rb.ease_sweep(f.train, f.test, f.movie_ids, l2_values)
    capped = rb.ease_sweep(f.train, f.test, f.movie_ids, l2_values,
                           capped_recall=True)
    for (_, m, _), (_, mc, _) in zip(sweep, capped):
      m["capped_recall_at_20"] = mc["recall_at_20"]
    rows.append(dict(name="popularity", seconds=pop_s,
                     **_pick(pop, RETRIEVAL_KEYS)))
    for l2, m, s in sweep:
      rows.append(dict(name=f"EASE lambda={l2:g}", seconds=s,
                       **_pick(m, RETRIEVAL_KEYS)))
    best_recall = max(sweep, key=lambda r: r[1]["recall_at_20"])
    best_top100 = max(sweep, key=lambda r: r[1]["top_100_accuracy"])
    for epochs in ctx.flags.tutorial_epochs:
      m, s = rb.two_tower(f.train, f.test, f.movie_ids, epochs=int(epochs),
                          seed=ctx.data_config.seed)
      rows.append(dict(name=f"TFRS-tutorial two-tower, {epochs} epochs",
                       seconds=s, **_pick(m, RETRIEVAL_KEYS)))
    peers = [r for r in rows[1:]]
    best_peer_top100 = max(r["top_100_accuracy"] for r in peers)
    ours = rows[0]
    return {
        "config": dataclasses.asdict(config),
        "model": {k: v for k, v in model.items()
                  if k not in ("config", "export")},
        "rows": rows,
        "ease_best_recall_at_20_lambda": best_recall[0],
        "ease_best_top_100_lambda": best_top100[0],
        "checks": {
            "top_100_accuracy": ours["top_100_accuracy"],
            "top_100_accuracy_target": 0.22,
            "top_100_vs_best_peer_ratio": bench_common.ratio(
                ours["top_100_accuracy"], best_peer_top100),
            "recall_at_20_vs_ease_ratio": bench_common.ratio(
                ours["recall_at_20"], best_recall[1]["recall_at_20"]),
            "recall_at_20_vs_ease_target": 0.95,
            "capped_recall_at_20_vs_ease_ratio": bench_common.ratio(
                ours.get("capped_recall_at_20", float("nan")),
                max(m["capped_recall_at_20"] for _, m, _ in sweep)),
            "scann_recall_at_100_vs_brute_force": model.get(
                "index", {}).get("recall_at_k"),
            "scann_recall_target": 0.99,
            "training_seconds": model.get("training_seconds"),
            "training_seconds_target": 600,
        },
    }
  return run


# --------------------------------------------------------------------------
# ScaNN and its peers (FAISS IVF/HNSW, hnswlib) on large synthetic corpora.


def index_section(ctx: Context) -> Callable[[], Dict]:
  def run():
    dim = RetrievalConfig().output_dim
    results = {corpus: index_bench.synthetic_tradeoff(
        num_vectors=ctx.flags.synthetic_vectors, dim=dim, corpus=corpus)
               for corpus in index_bench.CORPORA}
    png = os.path.join(ctx.out_dir, "ann_tradeoff.png")
    index_bench.plot_tradeoff(results, png)
    return {"num_vectors": ctx.flags.synthetic_vectors, "dim": dim,
            "threads": os.cpu_count(), "corpora": results,
            "plot": os.path.basename(png),
            "summary_markdown": index_bench.summary_markdown(results),
            "markdown": {c: index_bench.tradeoff_markdown(rows)
                         for c, rows in results.items()}}
  return run


# --------------------------------------------------------------------------
# Ranking.


def ranking_section(ctx: Context) -> Callable[[], Dict]:
  def run():
    f = ctx.frames
    out: Dict[str, Any] = {"models": {}}
    # Rating prediction: the ranking models trained on ratings
    # (examples="ratings", every train rating, as the peers); the served
    # ranker is trained on candidate lists (the e2e section).
    rating_data = dataclasses.replace(ctx.data_config, label_share=0.0)
    base = RankingConfig(examples="ratings", score="engage_x_rating",
                         epochs=6)
    for name, config in bench_zoo.ranking_configs(base).items():
      m = ktrain.train_and_evaluate(config, rating_data,
                                    ctx.fresh_run_dir(f"ranking_{name}"))
      out["models"][name] = {"config": dataclasses.asdict(config), **{
          k: v for k, v in m.items() if not isinstance(v, (list, dict))}}
    liked = (f.test["user_rating"].to_numpy() >= 4).astype(np.float64)
    rows = []
    for name, m in out["models"].items():
      rows.append(dict(name=f"{name.upper()} (this project)",
                       rmse=m["rmse"], mae=m["mae"],
                       spearman=m.get("spearman"),
                       liked_auc=m.get("liked_auc"),
                       seconds=m.get("train_seconds")))
    gm = kb.global_mean(f.train, f.test)
    rows.append(dict(name="global mean", **gm.metrics, seconds=gm.seconds))
    mf = kb.biased_mf(f.train, f.test, seed=ctx.data_config.seed)
    mf_auc = metrics.auc(liked, mf.predictions)
    rows.append(dict(name="biased MF (d64, validation-selected)",
                     **mf.metrics, liked_auc=mf_auc, seconds=mf.seconds))
    tutorial = []
    for seed in range(ctx.flags.dcn_tutorial_seeds):
      r = kb.dcn(f.train, f.test, seed=seed)
      tutorial.append(r.metrics["rmse"])
      rows.append(dict(name=f"TFRS-tutorial DCN, seed {seed}", **r.metrics,
                       liked_auc=metrics.auc(liked, r.predictions),
                       seconds=r.seconds))
    dcn, mmoe = out["models"]["dcn"], out["models"]["mmoe"]
    out.update(rows=rows, checks={
        "default_model": RankingConfig().model,
        "dcn_rmse": dcn["rmse"], "mmoe_rmse": mmoe["rmse"],
        "rmse_target": 0.850, "rmse_goal": 0.840,
        "mmoe_vs_dcn_rmse_ratio": bench_common.ratio(mmoe["rmse"], dcn["rmse"]),
        "mmoe_vs_dcn_rmse_ratio_target": 1.01,
        "mmoe_liked_auc": mmoe.get("liked_auc"),
        "biased_mf_liked_auc": mf_auc,
        "biased_mf_rmse": mf.metrics["rmse"],
        "dcn_vs_biased_mf_rmse_ratio": bench_common.ratio(dcn["rmse"],
                                                   mf.metrics["rmse"]),
        "tfrs_tutorial_dcn_rmse_median": bench_common.median(tutorial),
        "tfrs_tutorial_dcn_rmse_std": float(np.std(tutorial)),
        "dcn_training_seconds": dcn.get("train_seconds"),
        "mmoe_training_seconds": mmoe.get("train_seconds"),
        "training_seconds_target": 600,
    })
    return out
  return run


# --------------------------------------------------------------------------
# End to end.


def e2e_section(ctx: Context) -> Callable[[], Dict]:
  """The two-stage system as served, trained from scratch with a seeded
  `--holdout_users` share of the users left out of every fit: `make
  train`'s parts (timed), a second ranker (DCN-v2) on the same lists,
  offline quality on the test split through the exports, the held-out
  users as new users, and `/recommend` under load."""
  def run():
    data_config = dataclasses.replace(ctx.data_config,
                                      holdout_users=ctx.flags.e2e_holdout_users)
    root = ctx.fresh_run_dir("two_stage")
    seconds = train_commands.train_all(root, data_config)
    default = RankingConfig(seed=data_config.seed)
    data = pipeline.load_data(ktrain.ranking_data_config(default,
                                                         data_config))
    config = cascade.CascadeConfig()
    rankers = {default.model: os.path.join(root, "ranking")}
    for name in kmodel.MODELS:
      if name not in rankers:
        m = cascade.train_ranker(
            data, export_layout.locate(os.path.join(root, "retrieval")),
            os.path.join(root, f"ranking_{name}"),
            dataclasses.replace(default, model=name), config)
        seconds[f"ranking_{name}"] = m["lists_seconds"] + m["train_seconds"]
        rankers[name] = os.path.join(root, f"ranking_{name}")
    validation = {name: runs.read_json(os.path.join(d, "metrics.json"))[
        "validation"] for name, d in rankers.items()}
    sources_dir = export_layout.locate(os.path.join(root, "sources"),
                                       cascade.SOURCES_DIR)
    system = cascade_eval.Cascade(
        cascade.FittedSources.load(sources_dir),
        export_layout.locate(os.path.join(root, "retrieval")),
        {name: export_layout.locate(d, "ranking")
         for name, d in rankers.items()},
        cascade.read_config(sources_dir).served())
    quality = cascade_eval.evaluate(system, data)
    new_users = cascade_eval.evaluate_new_users(system, data)
    users = sorted(set(data.seen_ratings.user_id))[:200]
    n = ctx.flags.load_requests
    load, load_1, load_16, mixed_16 = e2e.run_load_tests_subprocess(
        root, [{"concurrency": ctx.flags.load_concurrency,
                "total_requests": n},
               {"concurrency": 1, "total_requests": n},
               {"concurrency": 16, "total_requests": n},
               {"concurrency": 16, "total_requests": n,
                "invalid_share": ctx.flags.load_invalid_share}],
        user_ids=users)
    cli_seconds = e2e.time_recommend_cli(root, "42")
    train_parts = ("retrieval", "data", "sources", "ranking")
    return {"quality": quality, "new_users": new_users, "load": load,
            "load_concurrency_1": load_1, "load_concurrency_16": load_16,
            "load_concurrency_16_mixed": mixed_16,
            "recommend_cli_seconds": cli_seconds,
            "validation": validation, "train_seconds": seconds,
            "default_train_seconds": sum(seconds[k] for k in train_parts),
            "default_ranker": default.model,
            "checks": _two_stage_checks(quality, new_users, default.model)}
  return run


def _best(methods: Dict[str, Dict], prefixes, key="ndcg_at_10"):
  """(name, value) of the best method whose name starts with a prefix."""
  found = [(n, m[key]) for n, m in methods.items()
           if n.startswith(tuple(prefixes))]
  return max(found, key=lambda x: x[1]) if found else (None, float("nan"))


def _two_stage_checks(quality, new_users, default: str) -> Dict[str, Any]:
  m = quality["methods"]
  served = m[f"two_stage/{default}"]["ndcg_at_10"]
  peer, peer_value = _best(m, ("source/", "peer/ease"))
  out = {"served_ndcg_at_10": served, "best_single": peer,
         "best_single_ndcg_at_10": peer_value,
         "ratio": bench_common.ratio(served, peer_value), "target": 1.10}
  for mode, q in new_users.items():
    mm = q["methods"]
    v = mm[f"two_stage/{default}"]["ndcg_at_10"]
    name, best = _best(mm, ("peer/",))
    out[f"new_users_{mode}"] = {"served_ndcg_at_10": v, "best_peer": name,
                                "best_peer_ndcg_at_10": best,
                                "ratio": bench_common.ratio(v, best)}
  return out


# --------------------------------------------------------------------------
# Markdown.


def _check(value, target, higher_is_better=True) -> str:
  if value is None:
    return "n/a"
  ok = value >= target if higher_is_better else value <= target
  return "met" if ok else "NOT met"


def render_markdown(report: Dict[str, Any]) -> str:
  m = report["machine"]
  lines = [
      "# Benchmark report", "",
      f"Generated by `make bench` ({report.get('started_at')} -> "
      f"{report.get('finished_at')}) on {m['cpus']} CPUs, TensorFlow "
      f"{m['tensorflow']}, load average at start {m['load_average_at_start']:.1f}."
      " Each section below was measured in one run (its start time is "
      "given; `--sections` reruns only some), peers in the same run as the "
      "models they are compared with. Latencies are medians (p50) and p99 "
      "of repeated calls.", ""]
  for name in ("retrieval", "index", "ranking", "e2e", "zoo"):
    if "error" in report.get(name, {}):
      lines += [f"## {name}: FAILED", "", "```", report[name]["error"], "```",
                ""]
  if "retrieval" in report and "error" not in report["retrieval"]:
    r = report["retrieval"]
    c = r["checks"]
    lines += [
        "## Retrieval (test split, all 3,883 movies as candidates)", "",
        _when(r),
        "top-k accuracy: each test rating a query, nothing excluded "
        "(FactorizedTopK). recall/ndcg: per user, train movies excluded, "
        "relevant = the user's test movies; recall = hits / |relevant|, "
        "capped recall = hits / min(k, |relevant|) (the definition behind "
        "the often-quoted EASE 0.408).",
        "",
        bench_common.markdown_table(r["rows"], ["name"] + RETRIEVAL_KEYS[2:]
                             + ["seconds"]), "",
        "| check | value | target | |", "|---|---|---|---|",
        f"| top-100 accuracy | {c['top_100_accuracy']:.4f} | >= 0.22 | "
        f"{_check(c['top_100_accuracy'], 0.22)} |",
        f"| top-100 vs best peer | {c['top_100_vs_best_peer_ratio']:.3f}x | "
        f"> 1 | {_check(c['top_100_vs_best_peer_ratio'], 1.0000001)} |",
        f"| recall@20 vs EASE (best lambda) | "
        f"{c['recall_at_20_vs_ease_ratio']:.3f}x | >= 0.95 | "
        f"{_check(c['recall_at_20_vs_ease_ratio'], 0.95)} |",
        f"| capped recall@20 vs EASE (best lambda) | "
        f"{c['capped_recall_at_20_vs_ease_ratio']:.3f}x | >= 0.95 | "
        f"{_check(c['capped_recall_at_20_vs_ease_ratio'], 0.95)} |",
        f"| ScaNN recall@100 vs brute force (movies) | "
        f"{c['scann_recall_at_100_vs_brute_force']} | >= 0.99 | "
        f"{_check(c['scann_recall_at_100_vs_brute_force'], 0.99)} |",
        f"| training time (s) | {c['training_seconds']:.0f} | < 600 | "
        f"{_check(c['training_seconds'], 600, False)} |", ""]
    idx = r["model"].get("index")
    if idx:
      lines += ["ScaNN vs brute force on the movie corpus:", "",
                "```", _json(idx), "```", ""]
  if "index" in report and "error" not in report["index"]:
    x = report["index"]
    lines += [f"## ANN indexes on {x['num_vectors']:,} synthetic vectors "
              f"(dim {x['dim']})", "", _when(x)]
    if isinstance(x["markdown"], str):  # a report from before the peers
      lines += [x["markdown"], "", f"![trade-off]({x['plot']})", ""]
    else:
      lines += [
          "ScaNN, FAISS IVF-Flat, FAISS HNSW and hnswlib HNSW (inner "
          f"product, {x.get('threads')} threads each) on two corpora: "
          "`clustered` (256 Gaussian clusters, queries from them) and "
          "`hard` (decaying spectrum, many small clusters, power-law norms, "
          "queries from another distribution; see "
          "`retrieval/index_bench.py`). Recall@100 against exact search, "
          "QPS per call at batch 1 and 256.", "", x["summary_markdown"], "",
          f"![trade-off]({x['plot']})", ""]
      for corpus, table in x["markdown"].items():
        lines += [f"### {corpus} corpus", "", table, ""]
  if "ranking" in report and "error" not in report["ranking"]:
    k = report["ranking"]
    c = k["checks"]
    default = c.get("default_model") or _default_ranker()
    lines += [
        "## Ranking (test split, rating prediction)", "", _when(k),
        "The ranking models trained on ratings (`--examples ratings`, every "
        "train rating, like the peers); the served ranker is trained on "
        "candidate lists (see Two stages).", "",
        bench_common.markdown_table(k["rows"], ["name", "rmse", "mae", "liked_auc",
                                         "seconds"]), "",
        "| check | value | target | |", "|---|---|---|---|",
        f"| default ranker ({default}) RMSE | {c[default + '_rmse']:.4f} | "
        f"<= 0.850 (goal 0.840) | "
        f"{_check(c[default + '_rmse'], 0.85, False)} |",
        f"| DCN-v2 RMSE | {c['dcn_rmse']:.4f} | <= 0.850 if default | |",
        f"| MMoE RMSE / DCN-v2 RMSE | {c['mmoe_vs_dcn_rmse_ratio']:.4f} | "
        f"<= 1.01 | {_check(c['mmoe_vs_dcn_rmse_ratio'], 1.01, False)} |",
        f"| MMoE liked AUC vs biased-MF rating as score | "
        f"{c['mmoe_liked_auc']} vs {c['biased_mf_liked_auc']:.4f} | above | "
        f"{_check((c['mmoe_liked_auc'] or 0) - c['biased_mf_liked_auc'], 1e-9)} |",
        f"| TFRS-tutorial DCN RMSE (median of seeds) | "
        f"{c['tfrs_tutorial_dcn_rmse_median']:.4f} ± "
        f"{c['tfrs_tutorial_dcn_rmse_std']:.4f} | peer | |", ""]
    for name, mm in k["models"].items():
      extra = {kk: v for kk, v in mm.items() if kk != "config"}
      lines += [f"{name} details:", "", "```", _json(extra), "```", ""]
  if "e2e" in report and "error" not in report["e2e"]:
    lines += _two_stage_markdown(report["e2e"])
  if "zoo" in report and "error" not in report["zoo"]:
    lines += bench_zoo.markdown(report["zoo"], _when(report["zoo"]))
  return "\n".join(lines) + "\n"


_TWO_STAGE_COLUMNS = ["name", "ndcg_at_10", "recall_at_10", "map_at_10",
                      "precision_at_10", "ndcg_at_20", "recall_at_20",
                      "candidate_recall"]


def _method_rows(methods, candidate_recall=None) -> List[Dict[str, Any]]:
  rows = []
  for name, m in methods.items():
    row = {"name": name, **m}
    source = name.split("/", 1)[1]
    if candidate_recall and name.startswith("source/"):
      row["candidate_recall"] = candidate_recall.get(source)
    rows.append(row)
  if candidate_recall:
    rows.append({"name": "merged candidates (ceiling)",
                 "candidate_recall": candidate_recall.get("merged")})
  return rows


def _two_stage_markdown(e: Dict[str, Any]) -> List[str]:
  q, c = e["quality"], e["checks"]
  cfg = q["config"]
  lines = [
      "## Two stages (test split, through the exports)", "", _when(e),
      f"Users with a test movie rated >= 4 ({q['num_users']}); relevant = "
      "those movies; each user's train movies excluded and given as the "
      "request's history. `source/*`: one candidate source alone over the "
      "catalogue; `merged/*`: the merged candidates in that source's "
      "order; `two_stage/*`: the merged candidates ranked by each ranker "
      "(served: " + e["default_ranker"] + "); `peer/*`: EASE over the whole "
      "catalogue fitted on every train rating, per lambda, and popularity. "
      "candidate_recall: relevant movies among a source's "
      f"candidates (per request: {cfg['two_tower']} two-tower, "
      f"{cfg['ease']} EASE, {cfg['ease_liked']} EASE-liked, "
      f"{cfg['popularity']} popularity, merged to at most "
      f"{cfg['list_size']}).", "",
      bench_common.markdown_table(_method_rows(q["methods"], q["candidate_recall"]),
                           _TWO_STAGE_COLUMNS), "",
      "| check | value | target | |", "|---|---|---|---|",
      f"| served NDCG@10 / best single ({c['best_single']}) | "
      f"{c['served_ndcg_at_10']:.4f} / {c['best_single_ndcg_at_10']:.4f} = "
      f"{c['ratio']:.3f}x | >= 1.10x | {_check(c['ratio'], 1.10)} |"]
  for mode in e["new_users"]:
    n = c[f"new_users_{mode}"]
    lines.append(
        f"| new users, {mode}: served / best peer ({n['best_peer']}) | "
        f"{n['served_ndcg_at_10']:.4f} / {n['best_peer_ndcg_at_10']:.4f} = "
        f"{n['ratio']:.3f}x | >= 1.10x | {_check(n['ratio'], 1.10)} |")
  total = e["default_train_seconds"]
  lines += [f"| default training (`make train`) | {total:.0f} s | < 600 s | "
            f"{_check(total, 600, False)} |"]
  if "load_concurrency_1" in e:
    one, eight = e["load_concurrency_1"], e["load"]
    lines += [
        f"| server ready (start to /health 200) | {eight['startup_s']:.1f} s "
        f"| <= 10 s | {_check(eight['startup_s'], 10, False)} |",
        f"| `recommend --user_id 42` wall | {e['recommend_cli_seconds']:.1f} s"
        f" | <= 5 s | {_check(e['recommend_cli_seconds'], 5, False)} |",
        f"| /recommend c=1 p50 | {one['p50_ms']:.1f} ms | <= 5 ms | "
        f"{_check(one['p50_ms'], 5, False)} |",
        f"| /recommend c=1 p99 | {one['p99_ms']:.1f} ms | <= 10 ms | "
        f"{_check(one['p99_ms'], 10, False)} |",
        f"| /recommend c={eight['concurrency']} throughput | "
        f"{eight['rps']:.0f} req/s | >= 300 | {_check(eight['rps'], 300)} |",
        f"| /recommend c={eight['concurrency']} p99 | {eight['p99_ms']:.1f} "
        f"ms | <= 50 ms | {_check(eight['p99_ms'], 50, False)} |",
        f"| /recommend errors | {one['errors'] + eight['errors']} | 0 | "
        f"{_check(-(one['errors'] + eight['errors']), 0)} |"]
  if "load_concurrency_16_mixed" in e:
    valid, mixed = e["load_concurrency_16"], e["load_concurrency_16_mixed"]
    bad = mixed["invalid"]
    fives = mixed["status"].get("5xx", 0) + valid["status"].get("5xx", 0)
    ratio = mixed["p99_ms"] / valid["p99_ms"]
    lines += [
        f"| c=16, {bad['share']:.0%} invalid: 5xx answers | {fives} | 0 | "
        f"{_check(-fives, 0)} |",
        f"| c=16, {bad['share']:.0%} invalid: invalid not answered 4xx | "
        f"{bad['not_4xx']} | 0 | {_check(-bad['not_4xx'], 0)} |",
        f"| c=16 valid-request p99, mixed / all valid | {mixed['p99_ms']:.1f}"
        f" / {valid['p99_ms']:.1f} ms = {ratio:.2f}x | <= 2x | "
        f"{_check(ratio, 2, False)} |"]
  lines += [""]
  for mode, nq in e["new_users"].items():
    what = ("demographics only; relevant = all their ratings >= 4"
            if mode == "demographics" else
            f"given their {mode.split('_')[1]} first ratings by time; "
            "relevant = the rest rated >= 4")
    lines += [f"Held-out users ({nq['num_users']}, left out of every fit), "
              f"{what}. `source/*`: each source alone; `peer/*_liked`: "
              "popularity counting ratings >= 4 only:", "",
              bench_common.markdown_table(_method_rows(nq["methods"]),
                                   _TWO_STAGE_COLUMNS[:-1]), ""]
  lines += ["Training time per part (s): " + ", ".join(
      f"{k} {v:.0f}" for k, v in e["train_seconds"].items()), "",
            "Validation lists (carved from the ranker's training lists) at "
            "the best epoch:", "", "```", _json(e["validation"]), "```", "",
            "`/recommend` under load (second process, loopback, "
            "keep-alive):", "", "```",
            _json({"concurrency_8": e["load"],
                   "concurrency_1": e.get("load_concurrency_1"),
                   "concurrency_16": e.get("load_concurrency_16"),
                   "concurrency_16_mixed": e.get(
                       "load_concurrency_16_mixed")}),
            "```", ""]
  return lines


def _default_ranker() -> str:
  """The default ranking model (reports written before the checks named
  it)."""
  return RankingConfig().model


def _when(section) -> str:
  return (f"Measured in the run started {section.get('measured_at', '?')}, "
          f"{section.get('section_seconds', 0):.0f} s.\n")


def _json(obj) -> str:
  return json.dumps(runs._jsonable(obj), indent=2, sort_keys=True)  # pylint: disable=protected-access


zoo_section = bench_zoo.zoo_section
