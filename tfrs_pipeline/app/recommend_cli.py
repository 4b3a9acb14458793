"""`tfrs-pipeline recommend` and `tfrs-pipeline similar`.

    tfrs-pipeline recommend --user_id=42 --k=10 [--runs=runs] [--json]
    tfrs-pipeline recommend --age=30 --gender=F --occupation=writer \
        --zip=94110
    tfrs-pipeline recommend --ratings=2571:5,1:4,260 [--age ...]
    tfrs-pipeline similar --movie_id=1 --k=10

Both read only the exports under `--runs` (RUNS/{retrieval,sources,ranking}
of `make train`), never the dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from typing import List, Optional, Sequence, Tuple

from absl import flags
from absl import logging

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

from tfrs_pipeline import errors, export_layout, features
from tfrs_pipeline.app import catalog as catalog_lib
from tfrs_pipeline.app import flag_specs
from tfrs_pipeline.app import recommender as recommender_lib
from tfrs_pipeline.app import run_config

MAX_K = recommender_lib.MAX_K

# Flags: `flag_specs.recommend` / `similar`; the spec's request inputs
# are defined here too, from the imported spec (`features.request_inputs`).
flag_specs.define([("new user", flag_specs.request_flags(
    features.request_inputs()))])
FLAGS = flags.FLAGS

# Table columns: rank, then every displayed movie input of the spec
# (`features.display_inputs()`; id, title and year first), then the
# numbers and the why text. Text columns are shortened, widest first,
# only to fit a terminal.
_HEADERS = {"rank": "#", "movie_id": "movie", "predicted_rating": "rating",
            "retrieval_score": "two_tower"}
_FIRST = ("movie_id", "title", "year")
_FIXED = ("rank", "movie_id", "year")
_MIN_WIDTH = 8
_SCORE_TEXT = {
    "engage_liked": "log P(watched among the candidates) + log P(liked)",
    "engage_x_rating": "P(watched) x predicted rating",
    "rating": "the predicted rating"}


def _display_keys() -> List[str]:
  keys = [i.display for i in features.display_inputs()]
  return [k for k in _FIRST if k in keys] + [k for k in keys
                                              if k not in _FIRST]


def _text(value) -> str:
  if isinstance(value, list):
    value = "|".join(value)
  return "-" if value is None else str(value)


def format_table(rows: List[dict], numbers: Sequence[str],
                 width: Optional[int] = None,
                 texts: Sequence[str] = ()) -> str:
  """Aligned text table of recommendation / similarity rows: rank, the
  displayed movie fields, `numbers` (3 decimals) and `texts` (e.g.
  "why"). With `width`, the widest text columns are cut ("…") until the
  rows fit (never below 8 characters); without it nothing is cut."""
  keys = ["rank", *_display_keys(), *numbers, *texts]
  cells = [[f"{r[k]:.3f}" if k in numbers and r.get(k) is not None
            else _text(r.get(k)) for k in keys] for r in rows]
  heads = [_HEADERS.get(k, k) for k in keys]
  widths = [max([len(h)] + [len(c[j]) for c in cells])
            for j, h in enumerate(heads)]
  shrinkable = [j for j, k in enumerate(keys)
                if k not in _FIXED and k not in numbers]
  while width and sum(widths) + 2 * (len(keys) - 1) > width:
    j = max(shrinkable, key=lambda j: widths[j], default=None)
    if j is None or widths[j] <= max(_MIN_WIDTH, len(heads[j])):
      break
    widths[j] -= 1

  def line(values):
    out = []
    for j, (k, v) in enumerate(zip(keys, values)):
      if len(v) > widths[j]:
        v = v[:widths[j] - 1] + "…"
      out.append(v.rjust(widths[j]) if k in numbers else v.ljust(widths[j]))
    return "  ".join(out).rstrip()
  return "\n".join([line(heads)] + [line(c) for c in cells])


def _width() -> Optional[int]:
  """The terminal's width when stdout is one and --full is off."""
  if FLAGS.full or not sys.stdout.isatty():
    return None
  return shutil.get_terminal_size((120, 24)).columns


def _progress(text: str) -> None:
  print(f"[recommend] {text}", file=sys.stderr, flush=True)


def _legend(runs_dir: str) -> str:
  """What the table's numbers mean (the ranker's score from its run)."""
  score = _SCORE_TEXT.get(run_config.ranking_score(runs_dir))
  return (f"score: the ranker's score{', ' + score if score else ''} (rows "
          "are sorted by it); rating: predicted rating, 1-5 stars; "
          "two_tower: the retrieval model's score of the movie, "
          "standardized over all movies (0 = average).")


def _print(rows, numbers, texts=(), heading="", legend=""):
  if FLAGS.json:
    print(json.dumps(rows, indent=1, ensure_ascii=False))
    return
  width = _width()
  if heading:
    print(heading)
  print(format_table(rows, numbers, width, texts))
  if legend:
    print("\n" + ("\n".join(textwrap.wrap(legend, max(width, 40)))
                  if width else legend))


def parse_ratings(text: str) -> List[Tuple[str, Optional[float]]]:
  """`--ratings` "2571:5,1:4,260" -> [("2571", 5.0), ("1", 4.0),
  ("260", None)]; `errors.ConfigError` names a malformed entry."""
  pairs = []
  for i, item in enumerate((text or "").split(",")):
    item = item.strip()
    if not item and (text or "").strip():
      raise errors.ConfigError(f"--ratings: entry {i + 1} is empty")
    if item:
      movie_id, _, value = item.partition(":")
      rating = None
      if value.strip():
        try:
          rating = float(value)
        except ValueError:
          raise errors.ConfigError(  # pylint: disable=raise-missing-from
              f"--ratings entry {item!r}: rating must be a number from 1 "
              f"to 5, got {value.strip()!r}")
      pairs.append((movie_id.strip(), rating))
  return pairs


def recommend_main(argv) -> None:
  del argv
  recommender_lib.set_op_threads(FLAGS.intra_op_threads)  # before any op
  logging.set_verbosity(logging.WARNING)
  demo = {i.request: FLAGS[i.request].value
          for i in features.request_inputs()}
  has_demo = any(v is not None for v in demo.values())
  has_ratings = FLAGS.ratings is not None
  if FLAGS.user_id is None and not has_demo and not has_ratings:
    raise errors.ConfigError("pass --user_id, or --ratings and/or --age "
                             "--gender --occupation --zip for a new user")
  if FLAGS.user_id is not None and has_ratings:
    raise errors.ConfigError("pass --user_id or --ratings, not both")
  pairs = parse_ratings(FLAGS.ratings)
  inputs = catalog_lib.request_inputs(demo) if has_demo else None
  recommender_lib.check_k(FLAGS.k)
  split = run_config.split(FLAGS.runs, FLAGS.split)
  start = time.time()
  _progress(f"loading the exports under {FLAGS.runs} (split "
            f"{split or 'not recorded'}, history {FLAGS.history}) ...")
  catalog = catalog_lib.load_catalog(
      export_layout.locate(os.path.join(FLAGS.runs, "sources"), "sources",
                           catalog_lib.CATALOG_FILE), FLAGS.history)
  ratings = (catalog_lib.validate_ratings(pairs, catalog) if has_ratings
             else None)
  if has_ratings and not ratings and inputs is None:
    raise errors.ConfigError("--ratings is empty: pass movie ids, or --age "
                             "--gender --occupation --zip")
  user_id = None if FLAGS.user_id is None else FLAGS.user_id.strip()
  known = user_id is not None and user_id in catalog.user_row
  if user_id is not None and not known and not has_demo:
    raise errors.RequestError(
        f"unknown user id {FLAGS.user_id!r} (not in the users table); "
        "pass --age --gender --occupation --zip to recommend for a new "
        "user")
  rec = recommender_lib.Recommender.from_runs(
      FLAGS.runs, catalog, num_candidates=FLAGS.num_candidates)
  _progress(f"loaded in {time.time() - start:.1f} s")
  if known:
    rows = rec.recommend(user_id, FLAGS.k)
    user = catalog.user(user_id) or {}
    who = recommender_lib.describe_demographics(user)
    heading = (f"Top {len(rows)} for user {user_id} ({who}, "
               f"{catalog.num_ratings(user_id)} rated movies)")
  elif has_ratings:
    rows = rec.recommend_for_ratings(ratings, inputs, k=FLAGS.k)
    who = recommender_lib.describe_demographics(inputs)
    heading = (f"Top {len(rows)} for a new user with {len(ratings)} "
               f"ratings" + (f" ({who})" if who else ""))
  else:
    rows = rec.recommend_for_inputs(inputs, k=FLAGS.k)
    heading = (f"Top {len(rows)} for a new user: "
               f"{recommender_lib.describe_demographics(inputs)}")
  if not FLAGS.json:
    for r in rows:
      r["why"] = _why(r) or "-"
  _print(rows, ("predicted_rating", "score", "retrieval_score"),
         ("why",) if not FLAGS.json else (), heading,
         _legend(FLAGS.runs))


def _why(row) -> str:
  """"because you liked <title>", else the sources that retrieved it."""
  if row.get("because"):
    return f"because you liked {row['because'].get('title')}"
  if row.get("why"):
    return str(row["why"])
  return ", ".join(s.replace("_", "-") for s in row.get("sources") or ())


def similar_main(argv) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.movie_id is None:
    raise errors.ConfigError("pass --movie_id")
  path = export_layout.locate(os.path.join(FLAGS.runs, "retrieval"),
                              "candidates.npz")
  if not os.path.exists(path):
    raise errors.MissingError(f"no {path}: train retrieval first")
  recommender_lib.check_k(FLAGS.k)
  catalog = catalog_lib.load_catalog(export_layout.locate(
      os.path.join(FLAGS.runs, "sources"), "sources",
      catalog_lib.CATALOG_FILE))
  movie_id = FLAGS.movie_id.strip()
  rows = recommender_lib.SimilarMovies(path, catalog).similar(
      movie_id, FLAGS.k, FLAGS.metric)
  movie = catalog_lib.movie_row(catalog, movie_id)
  about = f"{movie_id}: {movie.get('title')}" + (
      f" ({movie['year']})" if movie.get("year") else "")
  _print(rows, ("similarity",),
         heading=f"Movies most similar to {about}, by {FLAGS.metric} "
         "similarity of the two-tower movie embeddings")
