"""The sections of `make bench` and the Markdown report (see `bench.py`)."""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from typing import Any, Callable, Dict, List

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
from tfrs_pipeline import bench, metrics, pipeline, runs

RETRIEVAL_KEYS = ["top_1_accuracy", "top_5_accuracy", "top_10_accuracy",
                  "top_50_accuracy", "top_100_accuracy", "recall_at_10",
                  "recall_at_20", "recall_at_100", "ndcg_at_10", "ndcg_at_20",
                  "ndcg_at_100", "capped_recall_at_20"]


@dataclasses.dataclass
class Context:
  data_config: pipeline.DataConfig
  out_dir: str
  flags: Any

  def fresh_run_dir(self, name: str) -> str:
    """RUNS/name, emptied first (a benchmark never resumes an old run)."""
    path = os.path.join(self.out_dir, "runs", name)
    shutil.rmtree(path, ignore_errors=True)
    return path

  @functools.cached_property
  def frames(self) -> bench.Frames:
    return bench.load_frames(self.data_config)


def _pick(m: Dict[str, Any], keys: List[str]) -> Dict[str, float]:
  return {k: float(m[k]) for k in keys if k in m}


# --------------------------------------------------------------------------
# Retrieval.


def retrieval_section(ctx: Context) -> Callable[[], Dict]:
  def run():
    from retrieval import baselines as rb  # pylint: disable=g-import-not-at-top
    from retrieval import train as rtrain  # pylint: disable=g-import-not-at-top
    config = rtrain.RetrievalConfig()
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
            "top_100_vs_best_peer_ratio": bench.ratio(
                ours["top_100_accuracy"], best_peer_top100),
            "recall_at_20_vs_ease_ratio": bench.ratio(
                ours["recall_at_20"], best_recall[1]["recall_at_20"]),
            "recall_at_20_vs_ease_target": 0.95,
            "capped_recall_at_20_vs_ease_ratio": bench.ratio(
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
# ScaNN on a large synthetic corpus.


def index_section(ctx: Context) -> Callable[[], Dict]:
  def run():
    from retrieval import index  # pylint: disable=g-import-not-at-top
    from retrieval import train as rtrain  # pylint: disable=g-import-not-at-top
    dim = rtrain.RetrievalConfig().output_dim
    rows = index.synthetic_tradeoff(num_vectors=ctx.flags.synthetic_vectors,
                                    dim=dim)
    png = os.path.join(ctx.out_dir, "scann_tradeoff.png")
    index.plot_tradeoff(rows, png)
    return {"num_vectors": ctx.flags.synthetic_vectors, "dim": dim,
            "rows": rows, "plot": os.path.basename(png),
            "markdown": index.tradeoff_markdown(rows)}
  return run


# --------------------------------------------------------------------------
# Ranking.


def ranking_section(ctx: Context) -> Callable[[], Dict]:
  def run():
    from ranking import baselines as kb  # pylint: disable=g-import-not-at-top
    from ranking import train as ktrain  # pylint: disable=g-import-not-at-top
    f = ctx.frames
    out: Dict[str, Any] = {"models": {}}
    for name in ("dcn", "mmoe"):
      config = ktrain.RankingConfig(model=name)
      m = ktrain.train_and_evaluate(config, ctx.data_config,
                                    ctx.fresh_run_dir(f"ranking_{name}"))
      out["models"][name] = {"config": dataclasses.asdict(config), **{
          k: v for k, v in m.items() if not isinstance(v, (list, dict))}}
    liked = (f.test["user_rating"].to_numpy() >= 4).astype(np.float64)
    rows = []
    for name, m in out["models"].items():
      rows.append(dict(name=f"{name.upper()} (this project)",
                       rmse=m["rmse"], mae=m["mae"],
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
        "default_model": ktrain.RankingConfig().model,
        "dcn_rmse": dcn["rmse"], "mmoe_rmse": mmoe["rmse"],
        "rmse_target": 0.850, "rmse_goal": 0.840,
        "mmoe_vs_dcn_rmse_ratio": bench.ratio(mmoe["rmse"], dcn["rmse"]),
        "mmoe_vs_dcn_rmse_ratio_target": 1.01,
        "mmoe_liked_auc": mmoe.get("liked_auc"),
        "biased_mf_liked_auc": mf_auc,
        "biased_mf_rmse": mf.metrics["rmse"],
        "dcn_vs_biased_mf_rmse_ratio": bench.ratio(dcn["rmse"],
                                                   mf.metrics["rmse"]),
        "tfrs_tutorial_dcn_rmse_median": bench.median(tutorial),
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
  def run():
    from tfrs_pipeline import e2e  # pylint: disable=g-import-not-at-top
    runs_dir = os.path.join(ctx.out_dir, "runs")
    retrieval_dir = os.path.join(runs_dir, "retrieval")
    ranking_dir = _serving_ranking_dir(runs_dir)
    if not (os.path.isdir(os.path.join(retrieval_dir, "export"))
            and ranking_dir):
      raise RuntimeError("e2e needs the retrieval and ranking sections' "
                         "exports under " + runs_dir)
    data = pipeline.load_data(ctx.data_config)
    retrieval_export = os.path.join(retrieval_dir, "export", "retrieval")
    quality = e2e.evaluate_two_stage(
        retrieval_export, os.path.join(ranking_dir, "export", "ranking"),
        data)
    # Every ranker the ranking section trained, behind the same retrieval:
    # what the default ranker is chosen by.
    by_ranker = {}
    for name in ("dcn", "mmoe"):
      export_dir = os.path.join(runs_dir, f"ranking_{name}", "export",
                                "ranking")
      if os.path.isdir(export_dir):
        q = (quality if os.path.basename(ranking_dir) == f"ranking_{name}"
             else e2e.evaluate_two_stage(retrieval_export, export_dir, data))
        by_ranker[name] = {k: q[k] for k in (
            "two_stage_ndcg_at_10", "two_stage_recall_at_10",
            "retrieval_ndcg_at_10", "retrieval_recall_at_10")}
    serve_runs = os.path.join(ctx.out_dir, "serve_runs")
    _link_serving_runs(retrieval_dir, ranking_dir, serve_runs)
    users = sorted(set(ctx.frames.test.user_id))[:200]
    load = e2e.run_load_test_subprocess(
        serve_runs, raw_data=ctx.data_config.raw_data,
        data_dir=ctx.data_config.data_dir, split=ctx.data_config.split,
        user_ids=users, concurrency=ctx.flags.load_concurrency,
        total_requests=ctx.flags.load_requests)
    return {"quality": quality, "load": load, "by_ranker": by_ranker,
            "ranking_model": os.path.basename(ranking_dir)}
  return run


def _serving_ranking_dir(runs_dir: str) -> str:
  """The ranking run the service uses: the default model of `ranking`."""
  from ranking import train as ktrain  # pylint: disable=g-import-not-at-top
  path = os.path.join(runs_dir, f"ranking_{ktrain.RankingConfig().model}")
  return path if os.path.isdir(os.path.join(path, "export")) else ""


def _link_serving_runs(retrieval_dir: str, ranking_dir: str, target: str):
  os.makedirs(target, exist_ok=True)
  for name, src in (("retrieval", retrieval_dir), ("ranking", ranking_dir)):
    link = os.path.join(target, name)
    if os.path.islink(link):
      os.remove(link)
    os.symlink(os.path.abspath(src), link)


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
  for name in ("retrieval", "index", "ranking", "e2e"):
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
        bench.markdown_table(r["rows"], ["name"] + RETRIEVAL_KEYS[2:]
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
    lines += [f"## ScaNN on {x['num_vectors']:,} synthetic vectors "
              f"(dim {x['dim']})", "", _when(x), x["markdown"], "",
              f"![trade-off]({x['plot']})", ""]
  if "ranking" in report and "error" not in report["ranking"]:
    k = report["ranking"]
    c = k["checks"]
    default = c.get("default_model") or _default_ranker()
    lines += [
        "## Ranking (test split, rating prediction)", "", _when(k),
        bench.markdown_table(k["rows"], ["name", "rmse", "mae", "liked_auc",
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
    e = report["e2e"]
    lines += ["## Two stages end to end", "", _when(e),
              "Users with at least one test movie rated >= 4; relevant = "
              "those movies; train movies excluded.", "", "```",
              _json(e["quality"]), "```", ""]
    if e.get("by_ranker"):
      lines += [f"Each ranker behind the same retrieval (serving: "
                f"{e.get('ranking_model', '?')}):", "",
                "| ranker | two-stage NDCG@10 | two-stage recall@10 | "
                "retrieval alone NDCG@10 | retrieval alone recall@10 |",
                "|---|---|---|---|---|"]
      for name, q in e["by_ranker"].items():
        lines.append(f"| {name} | {q['two_stage_ndcg_at_10']:.4f} | "
                     f"{q['two_stage_recall_at_10']:.4f} | "
                     f"{q['retrieval_ndcg_at_10']:.4f} | "
                     f"{q['retrieval_recall_at_10']:.4f} |")
      lines.append("")
    lines += ["`/recommend` under load (second process, loopback):", "",
              "```", _json(e["load"]), "```", ""]
  return "\n".join(lines) + "\n"


def _default_ranker() -> str:
  """The default ranking model (reports written before the checks named
  it)."""
  from ranking.model import RankingConfig  # pylint: disable=g-import-not-at-top
  return RankingConfig().model


def _when(section) -> str:
  return (f"Measured in the run started {section.get('measured_at', '?')}, "
          f"{section.get('section_seconds', 0):.0f} s.\n")


def _json(obj) -> str:
  import json  # pylint: disable=g-import-not-at-top
  return json.dumps(runs._jsonable(obj), indent=2, sort_keys=True)  # pylint: disable=protected-access
