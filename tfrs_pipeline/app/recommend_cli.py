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
from typing import List, Optional, Sequence, Tuple

from absl import flags
from absl import logging

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)

from tfrs_pipeline import errors, features
from tfrs_pipeline.app import catalog as catalog_lib
from tfrs_pipeline.app import recommender as recommender_lib
from tfrs_pipeline.app.catalog import HISTORY_CHOICES

MAX_K = recommender_lib.MAX_K

# Table columns: rank, then every displayed movie input of the spec
# (`features.display_inputs()`; id, title and year first), with these
# headers and widths (others: their display key, 12 wide).
_HEADERS = {"movie_id": ("movie", 5), "title": ("title", 34),
            "year": ("year", 4), "genres": ("genres", 22),
            "director": ("director", 18), "star": ("star", 18)}
_FIRST = ("movie_id", "title", "year")


def _columns():
  keys = [i.display for i in features.display_inputs()]
  keys = [k for k in _FIRST if k in keys] + [k for k in keys
                                              if k not in _FIRST]
  return [("rank", "#", 3)] + [(k, *_HEADERS.get(k, (k, 12))) for k in keys]


def format_table(rows: List[dict], numbers: Sequence[str]) -> str:
  """Aligned text table of recommendation / similarity rows."""
  def cell(row, key, width):
    v = row.get(key)
    if isinstance(v, list):
      v = "|".join(v)
    v = "-" if v is None else str(v)
    return v if len(v) <= width else v[:width - 1] + "~"
  cols = _columns() + [(n, n, max(len(n), 7)) for n in numbers]
  lines = ["  ".join(h.ljust(w) if k not in numbers else h.rjust(w)
                     for k, h, w in cols)]
  for row in rows:
    lines.append("  ".join(
        f"{row[k]:.3f}".rjust(w) if k in numbers else
        cell(row, k, w).ljust(w) for k, _, w in cols))
  return "\n".join(line.rstrip() for line in lines)


def _define_flags():
  """Defines this module's absl flags (skipping names already defined, so
  that importing it next to other commands never clashes)."""
  def define(kind, name, default, doc, *args):
    if name not in flags.FLAGS:
      getattr(flags, f"DEFINE_{kind}")(name, default, *args, doc)

  define("string", "runs", "runs",
         "Directory with the retrieval/, sources/ and ranking/ runs (make "
         "train); only their exports are read.")
  define("integer", "k", 10, f"How many movies (1..{MAX_K}).")
  define("bool", "json", False, "Print a JSON list instead of a table.")
  define("string", "user_id", None, "MovieLens user id.")
  define("integer", "num_candidates", recommender_lib.DEFAULT_CANDIDATES,
         "Merged candidates to rank per request (0: the served "
         "CascadeConfig.serve_list_size).")
  for spec in features.request_inputs():  # --age --gender ... (the spec)
    define("integer" if spec.request_type is int else "string",
           spec.request, None, f"New user: {spec.request_doc or spec.doc}.")
  define("string", "ratings", None,
         "New user: rated movie ids, comma-separated, each with an optional "
         ":rating 1-5, e.g. 2571:5,1:4,260 (with or without --age "
         "--gender --occupation --zip).")
  define("enum", "history", "all",
         "Movies a known user is never recommended: those rated in `all` "
         "the data (train + test, for serving) or only in the `train` split "
         "(what the offline evaluation drops).",
         list(HISTORY_CHOICES))
  define("string", "movie_id", None, "similar: the movie id.")
  define("enum", "metric", "cosine",
         "similar: similarity of candidate embeddings.", ["cosine", "dot"])
  return flags.FLAGS


FLAGS = _define_flags()


def _print(rows, numbers):
  if FLAGS.json:
    print(json.dumps(rows, indent=1, ensure_ascii=False))
  else:
    print(format_table(rows, numbers))


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
  catalog = catalog_lib.load_catalog(
      os.path.join(FLAGS.runs, "sources", "export", "sources",
                   catalog_lib.CATALOG_FILE), FLAGS.history)
  ratings = (catalog_lib.validate_ratings(pairs, catalog) if has_ratings
             else None)
  if has_ratings and not ratings and inputs is None:
    raise errors.ConfigError("--ratings is empty: pass movie ids, or --age "
                             "--gender --occupation --zip")
  known = FLAGS.user_id is not None and (
      FLAGS.user_id.strip() in catalog.user_row)
  if FLAGS.user_id is not None and not known and not has_demo:
    raise errors.RequestError(
        f"unknown user id {FLAGS.user_id!r} (not in the users table); "
        "pass --age --gender --occupation --zip to recommend for a new "
        "user")
  rec = recommender_lib.Recommender.from_runs(
      FLAGS.runs, catalog, num_candidates=FLAGS.num_candidates)
  if known:
    rows = rec.recommend(FLAGS.user_id, FLAGS.k)
  elif has_ratings:
    rows = rec.recommend_for_ratings(ratings, inputs, k=FLAGS.k)
  else:
    rows = rec.recommend_for_inputs(inputs, k=FLAGS.k)
  numbers = ("predicted_rating", "score", "retrieval_score")
  if FLAGS.json:
    _print(rows, numbers)
    return
  lines = format_table(rows, numbers).splitlines()
  width = max(len(line) for line in lines)
  print("\n".join(
      (line.ljust(width) + "  " + text).rstrip() for line, text in zip(
          lines, ["why"] + [_why(r) or "-" for r in rows])))


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
  path = os.path.join(FLAGS.runs, "retrieval", "export", "candidates.npz")
  if not os.path.exists(path):
    raise errors.MissingError(f"no {path}: train retrieval first")
  recommender_lib.check_k(FLAGS.k)
  catalog = catalog_lib.load_catalog(os.path.join(
      FLAGS.runs, "sources", "export", "sources", catalog_lib.CATALOG_FILE))
  rows = recommender_lib.SimilarMovies(path, catalog).similar(
      FLAGS.movie_id, FLAGS.k, FLAGS.metric)
  _print(rows, ("similarity",))
