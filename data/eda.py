"""Exploratory data analysis of the enriched MovieLens-1M raw data.

`write_report(rawdata, out_dir)` writes one PNG per plot and a
self-contained `index.html` (the PNGs are embedded as base64 data URIs,
so the HTML file alone is the report) with a summary table and one
captioned section per plot. `run_eda(raw_dir, out_dir)` is the CLI hook:
it loads the raw files, writes the report and prints progress.

Plots are drawn on `matplotlib.figure.Figure` objects with the Agg
canvas directly, so importing this module never changes the pyplot
backend of the caller.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os
import re
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from matplotlib import dates as mdates
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
import pandas as pd

from data import raw

# Labels of the ML-1M age buckets, as in the GroupLens README.
AGE_LABELS = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44",
              45: "45-49", 50: "50-55", 56: "56+"}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
          "Oct", "Nov", "Dec")
DPI = 100
_TITLE_CHARS = 50
_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)$")
_BAR = "#4C72B0"
_BAR2 = "#DD8452"
_STAR_COLORS = ("#d7191c", "#fdae61", "#ffffbf", "#a6d96a", "#1a9641")
_THOUSANDS = ticker.StrMethodFormatter("{x:,.0f}")
_PERCENT = ticker.PercentFormatter(xmax=1.0, decimals=0)


@dataclasses.dataclass
class _Context:
  """What every plot function needs."""
  data: raw.RawData
  examples: pd.DataFrame  # one row per rating, user and movie joined
  min_count: int
  top_n: int


# --------------------------------------------------------------------------
# Summary.


def summary(rawdata: raw.RawData) -> Dict[str, object]:
  """Headline numbers of the data (plain Python values)."""
  ratings, movies = rawdata.ratings, rawdata.movies
  n_users_rated = ratings.user_id.nunique()
  n_movies_rated = ratings.movie_id.nunique()
  rated = movies[movies.movie_id.isin(set(ratings.movie_id))]
  cells = n_users_rated * n_movies_rated
  days = pd.to_datetime(ratings.timestamp, unit="s", utc=True)
  return {
      "num_ratings": len(ratings),
      "num_users": len(rawdata.users),
      "num_users_with_ratings": n_users_rated,
      "num_movies": len(movies),
      "num_rated_movies": n_movies_rated,
      "mean_rating": float(ratings.user_rating.mean()),
      "sparsity": 1.0 - len(ratings) / cells if cells else 1.0,
      "first_day": days.min().strftime("%Y-%m-%d"),
      "last_day": days.max().strftime("%Y-%m-%d"),
      "director_coverage": _known_share(rated.director),
      "star_coverage": _known_share(rated.star),
      "skipped_lines": rawdata.report.skipped_total,
      "skipped_by_file": dict(rawdata.report.skipped),
  }


def _known_share(names: pd.Series) -> float:
  return float((names != raw.UNKNOWN).mean()) if len(names) else 0.0


def _summary_rows(s: Dict[str, object]) -> List[Tuple[str, str, str, str]]:
  """(key, label, machine value, display value) rows of the table."""
  by_file = ", ".join(f"{k}: {v:,}" for k, v in
                      sorted(s["skipped_by_file"].items()))
  skipped = f"{s['skipped_lines']:,}" + (f" ({by_file})" if by_file else "")
  rows = [
      ("num_ratings", "Ratings", s["num_ratings"], f"{s['num_ratings']:,}"),
      ("num_users", "Users", s["num_users"], f"{s['num_users']:,}"),
      ("num_users_with_ratings", "Users with ratings",
       s["num_users_with_ratings"], f"{s['num_users_with_ratings']:,}"),
      ("num_movies", "Movies", s["num_movies"], f"{s['num_movies']:,}"),
      ("num_rated_movies", "Rated movies", s["num_rated_movies"],
       f"{s['num_rated_movies']:,}"),
      ("mean_rating", "Mean rating", f"{s['mean_rating']:.4f}",
       f"{s['mean_rating']:.3f}"),
      ("sparsity", "Sparsity (users with ratings x rated movies)",
       f"{s['sparsity']:.6f}", f"{100 * s['sparsity']:.2f}%"),
      ("date_range", "Date range (UTC)",
       f"{s['first_day']}/{s['last_day']}",
       f"{s['first_day']} to {s['last_day']}"),
      ("director_coverage", "Rated movies with a known director",
       f"{s['director_coverage']:.6f}",
       f"{100 * s['director_coverage']:.1f}%"),
      ("star_coverage", "Rated movies with a known star",
       f"{s['star_coverage']:.6f}", f"{100 * s['star_coverage']:.1f}%"),
      ("skipped_lines", "Skipped input lines", s["skipped_lines"], skipped),
  ]
  return [(k, label, str(v), d) for k, label, v, d in rows]


# --------------------------------------------------------------------------
# Drawing helpers.


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1
            ) -> Tuple[Figure, np.ndarray]:
  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  return fig, axes.ravel()


def _short(text: str, limit: int = _TITLE_CHARS) -> str:
  """Truncates a long label with an ellipsis, keeping a `(year)` suffix."""
  if len(text) <= limit:
    return text
  year = _YEAR_SUFFIX.search(text)
  tail = year.group(0) if year else ""
  head = text[:len(text) - len(tail)][:limit - len(tail) - 1]
  return head.rstrip() + "\u2026" + tail


def _no_data(ax, message: str) -> None:
  ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True,
          transform=ax.transAxes, fontsize=11, color="0.4")
  ax.set_xticks([])
  ax.set_yticks([])


def _barh(ax, labels: Sequence[str], values: Sequence[float],
          notes: Sequence[str], color: str = _BAR) -> None:
  """Horizontal bars, first label on top, a note at the end of each bar."""
  y = np.arange(len(labels))
  ax.barh(y, values, color=color)
  ax.set_yticks(y, [_short(str(l)) for l in labels])
  ax.invert_yaxis()
  ax.set_ylim(len(labels) - 0.4, -0.6)
  for yi, v, note in zip(y, values, notes):
    ax.text(v, yi, f" {note}", va="center", fontsize=8)
  ax.margins(x=0.18)
  ax.tick_params(axis="y", labelsize=9)


def _rank_by_count(frame: pd.DataFrame, key: str, n: int) -> pd.DataFrame:
  """Top `n` values of `key` by number of ratings, with mean rating."""
  stats = frame.groupby(key).user_rating.agg(["size", "mean"])
  stats = stats.sort_values(["size", "mean"], ascending=False)
  return stats.head(n)


def _rank_by_mean(frame: pd.DataFrame, key: str, n: int,
                  min_count: int) -> pd.DataFrame:
  """Top `n` values of `key` by mean rating among those with min_count."""
  stats = frame.groupby(key).user_rating.agg(["size", "mean"])
  stats = stats[stats["size"] >= min_count]
  return stats.sort_values(["mean", "size"], ascending=False).head(n)


def _count_panel(ax, stats: pd.DataFrame, what: str, title: str) -> None:
  if stats.empty:
    _no_data(ax, f"no {what}")
  else:
    _barh(ax, stats.index, stats["size"],
          [f"{c:,}  (mean {m:.2f})" for c, m in
           zip(stats["size"], stats["mean"])])
    ax.xaxis.set_major_formatter(_THOUSANDS)
    ax.set_xlabel("Number of ratings")
  ax.set_title(title)


def _mean_panel(ax, stats: pd.DataFrame, what: str, title: str,
                min_count: int) -> None:
  if stats.empty:
    _no_data(ax, f"no {what} with at least {min_count:,} ratings")
  else:
    _barh(ax, stats.index, stats["mean"],
          [f"{m:.2f}  (n={c:,})" for c, m in
           zip(stats["size"], stats["mean"])], color=_BAR2)
    ax.set_xlim(1, 5.9)
    ax.set_xticks(range(1, 6))
    ax.set_xlabel("Mean rating (stars; axis starts at 1)")
  ax.set_title(title)


def _share_table(frame: pd.DataFrame, key: str) -> pd.DataFrame:
  """Rows: values of `key`; columns: ratings 1..5; cells: share of row."""
  counts = pd.crosstab(frame[key], frame.user_rating)
  counts = counts.reindex(columns=[1.0, 2.0, 3.0, 4.0, 5.0], fill_value=0)
  return counts.div(counts.sum(axis=1), axis=0)


# --------------------------------------------------------------------------
# The plots. Each takes the context and returns a drawn Figure.


def _plot_ratings(ctx: _Context) -> Figure:
  r = ctx.data.ratings.user_rating
  counts = r.value_counts().reindex([1.0, 2.0, 3.0, 4.0, 5.0], fill_value=0)
  fig, (ax,) = _figure(7, 4.5)
  ax.bar(np.arange(1, 6), counts.values, color=_STAR_COLORS,
         edgecolor="0.3")
  for x, c in zip(range(1, 6), counts.values):
    ax.text(x, c, f"{c:,}\n{c / len(r):.1%}", ha="center", va="bottom",
            fontsize=9)
  ax.set_xticks(range(1, 6), [f"{i} \u2605" for i in range(1, 6)])
  ax.yaxis.set_major_formatter(_THOUSANDS)
  ax.margins(y=0.15)
  ax.set_xlabel("Rating (stars)")
  ax.set_ylabel("Number of ratings")
  ax.set_title(f"All ratings: n = {len(r):,}, mean = {r.mean():.2f}")
  return fig


def _plot_gender(ctx: _Context) -> Figure:
  ex = ctx.examples.assign(
      gender=np.where(ctx.examples.user_gender.astype(bool), "Male",
                      "Female"))
  shares = _share_table(ex, "gender")
  stats = ex.groupby("gender").agg(n=("user_rating", "size"),
                                   mean=("user_rating", "mean"),
                                   users=("user_id", "nunique"))
  fig, (ax,) = _figure(8, 4.5)
  width = 0.8 / max(len(shares), 1)
  colors = {"Female": _BAR2, "Male": _BAR}
  for i, gender in enumerate(shares.index):
    s = stats.loc[gender]
    ax.bar(np.arange(1, 6) + (i - (len(shares) - 1) / 2) * width,
           shares.loc[gender].values, width, color=colors[gender],
           label=(f"{gender}: {int(s['users']):,} users, "
                  f"{int(s['n']):,} ratings, "
                  f"mean {s['mean']:.2f}"))
  ax.set_xticks(range(1, 6), [f"{i} \u2605" for i in range(1, 6)])
  ax.yaxis.set_major_formatter(_PERCENT)
  ax.set_xlabel("Rating (stars)")
  ax.set_ylabel("Share of the group's ratings")
  ax.set_title("Rating distribution by gender (each group sums to 100%)")
  ax.legend(loc="upper left", fontsize=9)
  ax.margins(y=0.2)
  return fig


def _plot_age(ctx: _Context) -> Figure:
  ex = ctx.examples.assign(
      age=ctx.examples.bucketized_user_age.astype(int).map(AGE_LABELS))
  order = [l for l in AGE_LABELS.values() if l in set(ex.age)]
  shares = _share_table(ex, "age").reindex(order)
  stats = ex.groupby("age").agg(n=("user_rating", "size"),
                                mean=("user_rating", "mean"),
                                users=("user_id", "nunique")).reindex(order)
  fig, (left, right) = _figure(13, 4.8, 1, 2)
  y = np.arange(len(order))
  start = np.zeros(len(order))
  for star, color in zip(shares.columns, _STAR_COLORS):
    share = shares[star].values
    left.barh(y, share, left=start, color=color, edgecolor="0.3",
              label=f"{int(star)} \u2605")
    for yi, x0, s in zip(y, start, share):
      if s >= 0.045:
        left.text(x0 + s / 2, yi, f"{s:.0%}", ha="center", va="center",
                  fontsize=8)
    start += share
  left.set_yticks(y, order)
  left.invert_yaxis()
  left.xaxis.set_major_formatter(_PERCENT)
  left.set_xlabel("Share of the age group's ratings")
  left.set_ylabel("Age group")
  left.set_title("Rating distribution by age group")
  left.legend(ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.15),
              fontsize=8, frameon=False)
  _barh(right, order, stats["mean"].values,
        [f"{m:.2f}  ({u:,} users, {n:,} ratings)" for m, u, n in
         zip(stats["mean"], stats["users"], stats["n"])], color=_BAR2)
  right.set_xlim(1, 6.2)
  right.set_xticks(range(1, 6))
  right.set_xlabel("Mean rating (stars; axis starts at 1)")
  right.set_title("Mean rating by age group")
  return fig


def _plot_time(ctx: _Context) -> Figure:
  ratings = ctx.data.ratings
  when = pd.to_datetime(ratings.timestamp, unit="s", utc=True)
  by_day = ratings.user_rating.groupby(when.dt.day_of_week)
  per_day = by_day.size().reindex(range(7), fill_value=0)
  mean_day = by_day.mean().reindex(range(7))
  per_month = ratings.groupby(when.dt.month).size().reindex(
      range(1, 13), fill_value=0)
  timeline = ratings.groupby(
      when.dt.tz_localize(None).dt.to_period("M")).size()
  fig, axes = _figure(13, 8, 2, 2)
  ax = axes[0]
  ax.bar(range(7), per_day.values, color=_BAR)
  ax.set_xticks(range(7), WEEKDAYS)
  ax.yaxis.set_major_formatter(_THOUSANDS)
  ax.set(xlabel="Weekday (UTC)", ylabel="Number of ratings",
         title="Ratings per weekday")
  ax = axes[1]
  ax.plot(range(7), mean_day.values, marker="o", color=_BAR2)
  for x, m in enumerate(mean_day.values):
    if not np.isnan(m):
      ax.annotate(f"{m:.3f}", (x, m), textcoords="offset points",
                  xytext=(0, 7), ha="center", fontsize=8)
  ax.set_xticks(range(7), WEEKDAYS)
  ax.margins(y=0.3)
  ax.set(xlabel="Weekday (UTC)", ylabel="Mean rating (stars)",
         title="Mean rating per weekday (note the narrow y range)")
  ax = axes[2]
  ax.bar(range(1, 13), per_month.values, color=_BAR)
  ax.set_xticks(range(1, 13), MONTHS)
  ax.yaxis.set_major_formatter(_THOUSANDS)
  ax.set(xlabel="Calendar month (UTC, all years together)",
         ylabel="Number of ratings", title="Ratings per calendar month")
  ax = axes[3]
  ax.bar(timeline.index.to_timestamp(), timeline.values, width=25,
         color=_BAR)
  locator = mdates.AutoDateLocator(maxticks=10)
  ax.xaxis.set_major_locator(locator)
  ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
  ax.set_yscale("log")
  ax.yaxis.set_major_formatter(_THOUSANDS)
  ax.set(xlabel="Month (UTC)", ylabel="Number of ratings (log scale)",
         title="Ratings per month over time")
  return fig


def _plot_most_rated(ctx: _Context) -> Figure:
  stats = _rank_by_count(ctx.examples, "movie_title", ctx.top_n)
  fig, (ax,) = _figure(10, 1.2 + 0.3 * max(len(stats), 3))
  _count_panel(ax, stats, "ratings",
               f"The {len(stats)} most-rated movies")
  return fig


def _plot_best_rated(ctx: _Context) -> Figure:
  stats = _rank_by_mean(ctx.examples, "movie_title", ctx.top_n,
                        ctx.min_count)
  fig, (ax,) = _figure(10, 1.2 + 0.3 * max(len(stats), 3))
  _mean_panel(ax, stats, "movie",
              f"Best-rated movies with at least {ctx.min_count:,} ratings",
              ctx.min_count)
  return fig


def _plot_genres(ctx: _Context) -> Figure:
  genres = ctx.examples[["movie_genres", "user_rating"]].explode(
      "movie_genres")
  stats = genres.groupby("movie_genres").user_rating.agg(["size", "mean"])
  fig, (left, right) = _figure(13, 1.4 + 0.3 * max(len(stats), 3), 1, 2)
  by_count = stats.sort_values("size", ascending=False)
  _count_panel(left, by_count, "genres",
               "Ratings per genre (a movie counts for each of its genres)")
  by_mean = stats.sort_values("mean", ascending=False)
  _mean_panel(right, by_mean, "genres", "Mean rating per genre", 1)
  return fig


def _plot_people(ctx: _Context) -> Figure:
  panels = []
  for key, plural in (("director", "directors"), ("star", "stars")):
    known = ctx.examples[ctx.examples[key] != raw.UNKNOWN]
    panels.append((key, plural, _rank_by_count(known, key, ctx.top_n),
                   _rank_by_mean(known, key, ctx.top_n, ctx.min_count)))
  rows = max([3] + [len(p[2]) for p in panels] + [len(p[3]) for p in panels])
  fig, axes = _figure(15, 2.2 + 0.6 * rows, 2, 2)
  for i, (key, plural, by_count, by_mean) in enumerate(panels):
    _count_panel(axes[2 * i], by_count, plural,
                 f"Most-rated {plural} (known {key} only)")
    _mean_panel(axes[2 * i + 1], by_mean, plural,
                f"Best-rated {plural} with at least {ctx.min_count:,} "
                "ratings", ctx.min_count)
  return fig


def _plot_coverage(ctx: _Context) -> Figure:
  movies, ratings = ctx.data.movies, ctx.data.ratings
  rated = movies[movies.movie_id.isin(set(ratings.movie_id))]
  groups = (("all movies", movies), ("rated movies", rated),
            ("ratings", ctx.examples))
  fig, axes = _figure(15, 4.6, 1, 3)
  ax = axes[0]
  x = np.arange(len(groups))
  for j, (key, color) in enumerate((("director", _BAR), ("star", _BAR2))):
    shares = [_known_share(frame[key]) for _, frame in groups]
    bars = ax.bar(x + (j - 0.5) * 0.38, shares, 0.38, color=color,
                  label=f"known {key}")
    ax.bar_label(bars, [f"{s:.2%}" for s in shares], fontsize=8)
  ax.set_xticks(x, [name for name, _ in groups])
  ax.set_ylim(0, 1.25)
  ax.set_yticks(np.linspace(0, 1, 6))
  ax.yaxis.set_major_formatter(_PERCENT)
  ax.set(ylabel="Share with a known value",
         title="Enrichment coverage (director, star)")
  ax.legend(loc="upper center", ncols=2, fontsize=9)
  _activity_hist(axes[1], ratings.groupby("user_id").size(), "user",
                 "users with ratings")
  _activity_hist(axes[2], ratings.groupby("movie_id").size(), "movie",
                 "rated movies")
  return fig


def _activity_hist(ax, counts: pd.Series, what: str, plural: str) -> None:
  """Histogram of ratings per `what` on log-spaced bins."""
  top = max(int(counts.max()), 2)
  edges = np.unique(np.round(np.logspace(0, np.log10(top + 1), 30)))
  ax.hist(counts.values, bins=edges - 0.5, color=_BAR, edgecolor="white")
  ax.set_xscale("log")
  ax.xaxis.set_major_formatter(_THOUSANDS)
  median = float(counts.median())
  ax.axvline(median, color="black", linestyle="--", linewidth=1,
             label=f"median {median:,.0f} (min {counts.min():,}, "
             f"max {counts.max():,})")
  ax.set_ylim(top=ax.get_ylim()[1] * 1.2)
  ax.legend(loc="upper right", fontsize=9)
  ax.set(xlabel=f"Ratings per {what} (log scale)",
         ylabel=f"Number of {plural}",
         title=f"Ratings per {what} ({len(counts):,} {plural})")


@dataclasses.dataclass(frozen=True)
class Plot:
  """One report section: file name, title, caption and drawing function."""
  name: str
  title: str
  caption: str
  draw: Callable[[_Context], Figure]


PLOTS = (
    Plot("rating_distribution", "Rating distribution",
         "Look at the skew towards 4 stars: few 1-2 star ratings, so a "
         "rating model must beat a strong mean baseline.", _plot_ratings),
    Plot("ratings_by_gender", "Ratings by gender",
         "Compare the shape of the two distributions (normalized per "
         "group) and how many more ratings men give.", _plot_gender),
    Plot("ratings_by_age", "Ratings by age group",
         "Look at how the mean rating and the share of 5-star ratings "
         "change with age, and at how few ratings the youngest give.",
         _plot_age),
    Plot("ratings_over_time", "Ratings over time",
         "Look at the burst of activity in the first months and the long "
         "tail after it; weekday effects on the mean are tiny.", _plot_time),
    Plot("most_rated_movies", "Most-rated movies",
         "These are the popularity head that a retrieval model recommends "
         "by default; compare their mean ratings.", _plot_most_rated),
    Plot("best_rated_movies", "Best-rated movies",
         "Means over at least {min_count:,} ratings: classics dominate, "
         "and they are not the most-rated ones.", _plot_best_rated),
    Plot("genres", "Genres",
         "Left: how the ratings spread over genres; right: which genres "
         "are rated higher on average (niche genres score best).",
         _plot_genres),
    Plot("directors_and_stars", "Directors and stars",
         "Directors and lead actors by number of ratings and by mean "
         "rating (at least {min_count:,} ratings); unknown names are "
         "left out.", _plot_people),
    Plot("coverage_and_activity", "Enrichment coverage and activity",
         "Left: share with a known director and star; middle and right: "
         "the long tails of ratings per user and per movie.",
         _plot_coverage),
)


# --------------------------------------------------------------------------
# The report.


_CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
td { font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
.caption { color: #444; margin: 0.3em 0 0.8em; }
section { margin-bottom: 2.5em; }
"""


def _html(s: Dict[str, object], sections: List[Tuple[Plot, str, bytes]],
          source: str, params: str) -> str:
  rows = "\n".join(
      f'<tr data-key="{k}"><th>{html.escape(label)}</th>'
      f'<td data-value="{html.escape(value)}">{html.escape(shown)}</td></tr>'
      for k, label, value, shown in _summary_rows(s))
  toc = "\n".join(f'<li><a href="#{p.name}">{i}. {html.escape(p.title)}'
                  f"</a></li>" for i, (p, _, _) in enumerate(sections, 1))
  body = "\n".join(
      f'<section id="{p.name}">\n<h2>{i}. {html.escape(p.title)}</h2>\n'
      f'<p class="caption">{html.escape(caption)}</p>\n'
      f'<img alt="{html.escape(p.title)}" src="data:image/png;base64,'
      f'{base64.b64encode(png).decode("ascii")}">\n</section>'
      for i, (p, caption, png) in enumerate(sections, 1))
  return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MovieLens-1M exploratory data analysis</title>
<style>{_CSS}</style>
</head>
<body>
<h1>MovieLens-1M + MeLU enrichment: exploratory data analysis</h1>
<p>Source: <code>{html.escape(source or "(in memory)")}</code>.
{html.escape(params)}</p>
<h2>Summary</h2>
<table id="summary">
{rows}
</table>
<ol>
{toc}
</ol>
{body}
</body>
</html>
"""


def write_report(rawdata: raw.RawData, out_dir: str, min_count: int = 50,
                 top_n: int = 20,
                 log: Optional[Callable[[str], None]] = None) -> str:
  """Writes the PNG plots and `out_dir/index.html`; returns the HTML path.

  `min_count` is the least number of ratings a movie, director or star
  needs to appear in a best-rated ranking; `top_n` the ranking length.
  `log`, if given, receives one progress line per plot.
  """
  if rawdata.ratings.empty:
    raise ValueError("no ratings to analyse")
  log = log or (lambda _: None)
  os.makedirs(out_dir, exist_ok=True)
  ctx = _Context(rawdata, raw.ratings_examples(rawdata), min_count, top_n)
  sections = []
  for i, plot in enumerate(PLOTS, 1):
    log(f"plot {i}/{len(PLOTS)}: {plot.title.lower()}")
    path = os.path.join(out_dir, f"{i:02d}_{plot.name}.png")
    plot.draw(ctx).savefig(path, dpi=DPI)
    with open(path, "rb") as f:
      sections.append((plot, plot.caption.format(min_count=min_count),
                       f.read()))
  params = (f"Best-rated rankings need at least {min_count:,} ratings; "
            f"rankings show the top {top_n}. Times are UTC.")
  index = os.path.join(out_dir, "index.html")
  with open(index, "w", encoding="utf-8") as f:
    f.write(_html(summary(rawdata), sections, rawdata.source, params))
  return index


def run_eda(raw_dir: str, out_dir: str, on_bad_line: str = "error",
            min_count: int = 50, top_n: int = 20) -> str:
  """CLI hook: loads the raw data, writes the report, prints progress."""
  start = time.time()
  print(f"loading raw data from {raw_dir}...", flush=True)
  rawdata = raw.load_raw(raw_dir, on_bad_line=on_bad_line)
  print(f"loaded {len(rawdata.ratings):,} ratings, {len(rawdata.users):,} "
        f"users, {len(rawdata.movies):,} movies "
        f"({rawdata.report.skipped_total:,} lines skipped)", flush=True)
  index = write_report(rawdata, out_dir, min_count, top_n,
                       log=lambda line: print(line, flush=True))
  print(f"EDA report written in {time.time() - start:.1f} s: {index}",
        flush=True)
  return index
