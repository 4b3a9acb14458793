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
_NOTE = "bar-note"  # gid of the text at a bar's end
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
  min_count: int  # least ratings of a best/worst-rated entry
  top_n: int
  flagged: pd.DataFrame = dataclasses.field(  # `wrong_film_rows`
      default_factory=lambda: pd.DataFrame(columns=_FLAGGED_COLUMNS))
  group_top: int = 10  # ranking length per gender / age group
  group_min_count: int = 25  # least ratings from the group

  @property
  def people(self) -> pd.DataFrame:
    """`examples` with the director and star of flagged rows unknown."""
    out = self.examples.copy()
    wrong = out.movie_id.isin(set(self.flagged.movie_id))
    out.loc[wrong, ["director", "star"]] = raw.UNKNOWN
    return out


# --------------------------------------------------------------------------
# Enrichment rows that describe another film.

# The rule, as shown in the report.
WRONG_FILM_RULE = ("its Released and Poster fields are both N/A, the mark "
                   "of an obscure OMDb record of the same title rather "
                   "than the film")
_FLAGGED_COLUMNS = ["movie_id", "movie_title", "enrichment_title",
                    "director", "star", "ratings"]


def wrong_film_rows(enrichment: Optional[bytes], movies: pd.DataFrame,
                    ratings: pd.DataFrame) -> pd.DataFrame:
  """Rows of `movies_extrainfos.dat` that most likely describe another film.

  MeLU fetched the extra fields from OMDb by title and year; where OMDb
  had no exact record it returned another film of that name:
  *Sunset Blvd. (1950)* got an Ulli Lommel record (which made him the
  best-rated director), *Blood Simple (1984)* a Korean short, *Young and
  Innocent (1937)* an adult film. The enrichment's Year field is the
  ML-1M year in every row but one, so a year rule finds none of them;
  what the wrong records share is that OMDb knows neither a release date
  nor a poster for them. Rule: a row is flagged when its Released and
  Poster fields are both N/A. On the real file this flags 14 of 3,881
  rows: the wrong films above and a few right but unverifiable records
  of tiny films (e.g. *Costa Brava (1946)*), whose names the report then
  treats as unknown too. Lines the raw reader rejects are skipped here.

  Returns one row per flagged ML-1M movie: `_FLAGGED_COLUMNS`, most-rated
  first.
  """
  if not enrichment:
    return pd.DataFrame(columns=_FLAGGED_COLUMNS)
  titles = dict(zip(movies.movie_id, movies.movie_title))
  counts = ratings.movie_id.value_counts()
  rows = []
  text = enrichment.decode("utf-8-sig", errors="replace")
  for line in text.split("\n"):
    fields = [f.strip(" \t") for f in line.rstrip("\r").split("::")]
    if len(fields) < 11 or fields[0] not in titles:
      continue
    if fields[4].upper() == "N/A" and fields[-1].upper() == "N/A":
      rows.append([fields[0], titles[fields[0]], fields[1],
                   raw.first_name_in_list(fields[6]),
                   raw.first_name_in_list(fields[8]),
                   int(counts.get(fields[0], 0))])
  out = pd.DataFrame(rows, columns=_FLAGGED_COLUMNS)
  out = out.drop_duplicates("movie_id")
  return out.sort_values(["ratings", "movie_title"],
                         ascending=[False, True]).reset_index(drop=True)


def _flagged_text(flagged: pd.DataFrame, limit: int = 3) -> str:
  """'14 rows (11 rated; e.g. Sunset Blvd. ... (229 ratings), ...)'."""
  if flagged.empty:
    return "no rows"
  rated = flagged[flagged.ratings > 0]
  examples = ", ".join(f"{t} ({n:,} ratings)" for t, n in
                       zip(rated.movie_title[:limit], rated.ratings[:limit]))
  return (f"{len(flagged):,} rows ({len(rated):,} of them rated"
          + (f"; e.g. {examples}" if examples else "") + ")")


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
  if "flagged_enrichment_rows" in s:
    n = s["flagged_enrichment_rows"]
    rows.append(("flagged_enrichment_rows",
                 "Enrichment rows flagged as another film (table below)",
                 n, f"{n:,}"))
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
          notes: Sequence[str], color: str = _BAR, base: float = 0.0,
          label_chars: int = _TITLE_CHARS) -> None:
  """Horizontal bars from `base`, first label on top, a note at the end
  of each bar."""
  y = np.arange(len(labels))
  values = np.asarray(values, dtype=float)
  ax.barh(y, values - base, left=base, color=color)
  ax.set_yticks(y, [_short(str(l), label_chars) for l in labels])
  ax.invert_yaxis()
  ax.set_ylim(len(labels) - 0.4, -0.6)
  for yi, v, note in zip(y, values, notes):
    ax.text(v, yi, f" {note}", va="center", fontsize=8, gid=_NOTE)
  ax.margins(x=0.05)
  ax.tick_params(axis="y", labelsize=9)


def _fit_notes(fig: Figure) -> None:
  """Widens each x axis so that the notes at the bar ends fit inside.

  A note starts at its bar's end (data x `v`) and is `w` pixels wide; on
  an axis [lo, hi] `W` pixels wide it fits when
  (v - lo) / (hi - lo) * W + w <= 0.98 W, i.e. hi >= lo + (v - lo) W /
  (0.98 W - w). Pixel widths of text do not change with the limits.
  """
  fig.draw_without_rendering()
  renderer = fig.canvas.get_renderer()
  for ax in fig.axes:
    notes = [t for t in ax.texts if t.get_gid() == _NOTE]
    if not notes:
      continue
    lo, hi = ax.get_xlim()
    width = ax.get_window_extent(renderer).width
    need = hi
    for t in notes:
      w = t.get_window_extent(renderer).width
      if w < 0.9 * width:
        need = max(need, lo + (t.get_position()[0] - lo) * width
                   / (0.98 * width - w))
    ax.set_xlim(lo, need)


def mean_axis_start(means: Sequence[float]) -> float:
  """Where a mean-rating axis starts: 0.1 star below the smallest shown
  mean, rounded down to a tenth (so differences of a tenth are visible;
  an axis from 1 or 0 would make 3.6 and 4.4 look alike)."""
  return max(0.0, float(np.floor((float(np.min(means)) - 0.1) * 10) / 10))


def _rank_by_count(frame: pd.DataFrame, key: str, n: int) -> pd.DataFrame:
  """Top `n` values of `key` by number of ratings, with mean rating."""
  stats = frame.groupby(key).user_rating.agg(["size", "mean"])
  stats = stats.sort_values(["size", "mean"], ascending=False)
  return stats.head(n)


def _rank_by_mean(frame: pd.DataFrame, key: str, n: int,
                  min_count: int, worst: bool = False) -> pd.DataFrame:
  """Top `n` values of `key` by mean rating (lowest first if `worst`)
  among those with at least `min_count` ratings; ties: more ratings
  first."""
  stats = frame.groupby(key).user_rating.agg(["size", "mean"])
  stats = stats[stats["size"] >= min_count]
  order = stats.assign(key=stats["mean"] * (1 if worst else -1))
  return stats.loc[order.sort_values(["key", "size"],
                                     ascending=[True, False]).index].head(n)


def _count_panel(ax, stats: pd.DataFrame, what: str, title: str,
                 ylabel: str, label_chars: int = _TITLE_CHARS) -> None:
  ax.set_ylabel(ylabel)
  if stats.empty:
    _no_data(ax, f"no {what}")
  else:
    _barh(ax, stats.index, stats["size"],
          [f"{c:,}  (mean {m:.2f})" for c, m in
           zip(stats["size"], stats["mean"])], label_chars=label_chars)
    ax.xaxis.set_major_formatter(_THOUSANDS)
    ax.set_xlabel("Number of ratings")
  ax.set_title(title)


def _mean_panel(ax, stats: pd.DataFrame, what: str, title: str,
                min_count: int, ylabel: str, worst: bool = False,
                notes: Optional[Sequence[str]] = None,
                label_chars: int = _TITLE_CHARS) -> None:
  """Mean-rating bars from `mean_axis_start` (stated in the x label)."""
  ax.set_ylabel(ylabel)
  if stats.empty:
    _no_data(ax, f"no {what} with at least {min_count:,} ratings")
  else:
    base = mean_axis_start(stats["mean"])
    top = float(stats["mean"].max())
    _barh(ax, stats.index, stats["mean"],
          notes if notes is not None else
          [f"{m:.2f}  (n={c:,})" for c, m in
           zip(stats["size"], stats["mean"])],
          color=_BAR if worst else _BAR2, base=base,
          label_chars=label_chars)
    ax.set_xlim(base, top + 0.05 * (top - base) + 0.01)
    span = top - base
    step = (0.05 if span < 0.4 else 0.1 if span <= 1.0 else
            0.2 if span <= 2.0 else 0.5)
    ax.xaxis.set_major_locator(ticker.MultipleLocator(step))
    ax.set_xlabel(f"Mean rating (stars; axis starts at {base:.1f})")
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
  _mean_panel(right, stats.rename(columns={"n": "size"}), "age groups",
              "Mean rating by age group", 1, "Age group",
              notes=[f"{m:.2f}  ({u:,} users, {n:,} ratings)" for m, u, n
                     in zip(stats["mean"], stats["users"], stats["n"])])
  return fig


def _plot_occupation(ctx: _Context) -> Figure:
  stats = ctx.examples.groupby("user_occupation_text").agg(
      size=("user_rating", "size"), mean=("user_rating", "mean"),
      users=("user_id", "nunique")).sort_values("size", ascending=False)
  fig, (left, right) = _figure(14, 1.6 + 0.32 * max(len(stats), 3), 1, 2)
  _barh(left, stats.index, stats["size"],
        [f"{n:,}  ({u:,} users)" for n, u in
         zip(stats["size"], stats["users"])])
  left.xaxis.set_major_formatter(_THOUSANDS)
  left.set(xlabel="Number of ratings", ylabel="Occupation (users.dat)",
           title="Ratings per occupation")
  by_mean = stats.sort_values("mean", ascending=False)
  _mean_panel(right, by_mean, "occupations",
              "Mean rating per occupation (highest first)", 1, "Occupation")
  return fig


# First digit of a US zip code: the USPS national area.
ZIP_AREAS = {
    "0": "New England, NJ, PR", "1": "NY, PA, DE",
    "2": "DC, MD, VA, WV, NC, SC", "3": "FL, GA, AL, TN, MS",
    "4": "MI, OH, IN, KY", "5": "MN, WI, IA, Dakotas, MT",
    "6": "IL, MO, KS, NE", "7": "TX, LA, AR, OK",
    "8": "CO, AZ, UT, NM, NV, ID, WY", "9": "CA, OR, WA, AK, HI",
}


def _zip_prefix(zips: pd.Series, digits: int) -> pd.Series:
  """First `digits` digits of the cleaned zip code, else 'other'."""
  ok = zips.str.fullmatch(r"\d{%d,}" % digits)
  return zips.str[:digits].where(ok, "other")


def _plot_location(ctx: _Context) -> Figure:
  ex = ctx.examples
  by = lambda key: ex.groupby(key).agg(
      size=("user_rating", "size"), mean=("user_rating", "mean"),
      users=("user_id", "nunique"))
  areas = by(_zip_prefix(ex.user_zip_code, 1).rename("area"))
  prefixes = by(_zip_prefix(ex.user_zip_code, 3).rename("prefix"))
  prefixes = prefixes.drop(index="other", errors="ignore")
  fig, axes = _figure(17, 6.2, 1, 3)
  area_labels = [f"{a}xx: {ZIP_AREAS.get(a, 'not a US zip')}"
                 for a in areas.index]
  _mean_panel(axes[0], areas.set_axis(area_labels), "zip areas",
              "Mean rating by zip area (first digit)", 1, "Zip code area",
              notes=[f"{m:.2f}  ({u:,} users)" for m, u in
                     zip(areas["mean"], areas["users"])])
  top = prefixes.sort_values("size", ascending=False).head(ctx.top_n)
  _mean_panel(axes[1], top.set_axis([f"{p}xx" for p in top.index]),
              "zip prefixes",
              f"The {len(top)} 3-digit zip prefixes with most ratings", 1,
              "3-digit zip prefix",
              notes=[f"{m:.2f}  ({u:,} users, {n:,} ratings)" for m, u, n
                     in zip(top["mean"], top["users"], top["size"])])
  ax = axes[2]
  if prefixes.empty:
    _no_data(ax, "no zip codes with 3 digits")
  else:
    ax.scatter(prefixes["users"], prefixes["mean"], s=12, alpha=0.5,
               color=_BAR, edgecolor="none")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_THOUSANDS)
    ax.axhline(float(ex.user_rating.mean()), color="black", linewidth=1,
               linestyle="--",
               label=f"overall mean {ex.user_rating.mean():.2f}")
    ax.legend(loc="lower right", fontsize=9)
  ax.set(xlabel="Users in the prefix (log scale)",
         ylabel="Mean rating of the prefix (stars)",
         title=f"Mean rating against users, {len(prefixes):,} prefixes")
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


def _with_interval(ax, x, stats: pd.DataFrame) -> None:
  """Mean per x with a 95% normal interval (1.96 standard errors)."""
  half = 1.96 * stats["std"].fillna(0) / np.sqrt(stats["size"])
  ax.errorbar(x, stats["mean"], yerr=half, marker="o", color=_BAR2,
              ecolor="0.5", capsize=3, linewidth=1.2, markersize=4)


def _plot_monthly_mean(ctx: _Context) -> Figure:
  ratings = ctx.data.ratings
  when = pd.to_datetime(ratings.timestamp, unit="s", utc=True)
  stats = lambda key: ratings.user_rating.groupby(key).agg(
      ["size", "mean", "std"])
  calendar = stats(when.dt.month).reindex(range(1, 13))
  timeline = stats(when.dt.tz_localize(None).dt.to_period("M").rename(
      "month"))
  fig, (left, right) = _figure(15, 4.8, 1, 2)
  shown = calendar.dropna(subset=["mean"])
  _with_interval(left, shown.index, shown)
  sizes = calendar["size"].fillna(0).astype(int)
  left.set_xticks(range(1, 13), [f"{m}\n{n:,}" for m, n in
                                 zip(MONTHS, sizes)], fontsize=8)
  left.margins(y=0.15)
  left.set(xlabel="Calendar month of the rating (UTC, all years together) "
           "and its number of ratings", ylabel="Mean rating (stars)",
           title="Mean rating per calendar month (bars: 95% interval)")
  _with_interval(right, timeline.index.to_timestamp(), timeline)
  locator = mdates.AutoDateLocator(maxticks=10)
  right.xaxis.set_major_locator(locator)
  right.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
  right.axhline(float(ratings.user_rating.mean()), color="black",
                linewidth=1, linestyle="--",
                label=f"overall mean {ratings.user_rating.mean():.2f}")
  right.legend(loc="lower right", fontsize=9)
  right.set(xlabel="Month of the rating (UTC)", ylabel="Mean rating (stars)",
            title=f"Mean rating per month over time ({len(timeline)} "
            "months; bars: 95% interval)")
  return fig


def _plot_decades(ctx: _Context) -> Figure:
  ex = ctx.examples[ctx.examples.release_year > 0]
  decade = (ex.release_year // 10 * 10).rename("decade")
  stats = ex.groupby(decade).agg(
      size=("user_rating", "size"), mean=("user_rating", "mean"),
      std=("user_rating", "std"), movies=("movie_id", "nunique"))
  fig, (left, right) = _figure(15, 4.8, 1, 2)
  if stats.empty:
    for ax in (left, right):
      _no_data(ax, "no release years in the titles")
    return fig
  x = np.arange(len(stats))
  labels = [f"{d}s" for d in stats.index]
  bars = left.bar(x, stats["size"], color=_BAR)
  left.bar_label(bars, [f"{n:,}\n{m:,} movies" for n, m in
                        zip(stats["size"], stats["movies"])], fontsize=8)
  left.set_xticks(x, labels)
  left.set_yscale("log")
  left.yaxis.set_major_formatter(_THOUSANDS)
  left.margins(y=0.25)
  left.set(xlabel="Release decade (from the title's year)",
           ylabel="Number of ratings (log scale)",
           title="Ratings per release decade")
  _with_interval(right, x, stats)
  for xi, m in zip(x, stats["mean"]):
    right.annotate(f"{m:.2f}", (xi, m), textcoords="offset points",
                   xytext=(8, 0), va="center", fontsize=8)
  right.set_xticks(x, labels)
  right.margins(x=0.06)
  right.axhline(float(ex.user_rating.mean()), color="black", linewidth=1,
                linestyle="--",
                label=f"overall mean {ex.user_rating.mean():.2f}")
  right.legend(loc="lower left", fontsize=9)
  right.set(xlabel="Release decade", ylabel="Mean rating (stars)",
            title="Mean rating per release decade (bars: 95% interval)")
  return fig


def _plot_most_rated(ctx: _Context) -> Figure:
  stats = _rank_by_count(ctx.examples, "movie_title", ctx.top_n)
  fig, (ax,) = _figure(10, 1.2 + 0.3 * max(len(stats), 3))
  _count_panel(ax, stats, "ratings",
               f"The {len(stats)} most-rated movies", "Movie")
  return fig


def _plot_best_rated(ctx: _Context) -> Figure:
  stats = _rank_by_mean(ctx.examples, "movie_title", ctx.top_n,
                        ctx.min_count)
  fig, (ax,) = _figure(10, 1.2 + 0.3 * max(len(stats), 3))
  _mean_panel(ax, stats, "movie",
              f"Best-rated movies with at least {ctx.min_count:,} ratings",
              ctx.min_count, "Movie")
  return fig


def _plot_worst_rated(ctx: _Context) -> Figure:
  stats = _rank_by_mean(ctx.examples, "movie_title", ctx.top_n,
                        ctx.min_count, worst=True)
  fig, (ax,) = _figure(10, 1.2 + 0.3 * max(len(stats), 3))
  _mean_panel(ax, stats, "movie",
              f"Worst-rated movies with at least {ctx.min_count:,} ratings "
              "(lowest first)", ctx.min_count, "Movie", worst=True)
  return fig


def _group_panels(axes, ctx: _Context, groups: Sequence[Tuple[str, pd.DataFrame]],
                  best: bool) -> None:
  """One most-rated (or best-rated) movie ranking per group."""
  for ax, (name, frame) in zip(axes, groups):
    users = frame.user_id.nunique()
    if best:
      stats = _rank_by_mean(frame, "movie_title", ctx.group_top,
                            ctx.group_min_count)
      _mean_panel(ax, stats, "movie",
                  f"{name}: best-rated ({users:,} users)",
                  ctx.group_min_count, "Movie", label_chars=40)
    else:
      stats = _rank_by_count(frame, "movie_title", ctx.group_top)
      _count_panel(ax, stats, "ratings",
                   f"{name}: most-rated ({users:,} users)", "Movie",
                   label_chars=40)
  for ax in axes[len(groups):]:
    ax.axis("off")


def _gender_groups(ctx: _Context) -> List[Tuple[str, pd.DataFrame]]:
  male = ctx.examples.user_gender.astype(bool)
  return [(name, ctx.examples[mask]) for name, mask in
          (("Women", ~male), ("Men", male)) if mask.any()]


def _age_groups(ctx: _Context) -> List[Tuple[str, pd.DataFrame]]:
  age = ctx.examples.bucketized_user_age.astype(int)
  return [(f"{label} years", ctx.examples[age == a])
          for a, label in AGE_LABELS.items() if (age == a).any()]


def _plot_movies_by_gender(ctx: _Context) -> Figure:
  groups = _gender_groups(ctx)
  fig, axes = _figure(17, 1.6 + 0.62 * ctx.group_top, 2, 2)
  _group_panels(axes[0::2], ctx, groups, best=False)
  _group_panels(axes[1::2], ctx, groups, best=True)
  return fig


def _plot_age_rankings(ctx: _Context, best: bool) -> Figure:
  groups = _age_groups(ctx)
  rows = (len(groups) + 1) // 2
  fig, axes = _figure(17, 0.5 + rows * (0.9 + 0.3 * ctx.group_top), rows, 2)
  _group_panels(axes, ctx, groups, best=best)
  return fig


def _plot_genres(ctx: _Context) -> Figure:
  genres = ctx.examples[["movie_genres", "user_rating"]].explode(
      "movie_genres")
  stats = genres.groupby("movie_genres").user_rating.agg(["size", "mean"])
  fig, (left, right) = _figure(13, 1.4 + 0.3 * max(len(stats), 3), 1, 2)
  by_count = stats.sort_values("size", ascending=False)
  _count_panel(left, by_count, "genres",
               "Ratings per genre (a movie counts for each of its genres)",
               "Genre")
  by_mean = stats.sort_values("mean", ascending=False)
  _mean_panel(right, by_mean, "genres", "Mean rating per genre", 1, "Genre")
  return fig


def _plot_people(ctx: _Context) -> Figure:
  panels = []
  people = ctx.people
  for key, plural in (("director", "directors"), ("star", "stars")):
    known = people[people[key] != raw.UNKNOWN]
    panels.append((key, plural, _rank_by_count(known, key, ctx.top_n),
                   _rank_by_mean(known, key, ctx.top_n, ctx.min_count)))
  rows = max([3] + [len(p[2]) for p in panels] + [len(p[3]) for p in panels])
  fig, axes = _figure(15, 2.2 + 0.6 * rows, 2, 2)
  for i, (key, plural, by_count, by_mean) in enumerate(panels):
    _count_panel(axes[2 * i], by_count, plural,
                 f"Most-rated {plural} (known {key} only)", key.title())
    _mean_panel(axes[2 * i + 1], by_mean, plural,
                f"Best-rated {plural} with at least {ctx.min_count:,} "
                "ratings", ctx.min_count, key.title())
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
  ax.set(xlabel="Counted over", ylabel="Share with a known value",
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


_MEAN_AXIS = ("Mean-rating axes start 0.1 star below the smallest mean "
              "shown (stated on each axis).")

PLOTS = (
    Plot("rating_distribution", "Rating distribution",
         "Look at the skew towards 4 stars: few 1-2 star ratings, so a "
         "rating model must beat a strong mean baseline.", _plot_ratings),
    Plot("ratings_by_gender", "Ratings by gender",
         "Compare the shape of the two distributions (normalized per "
         "group) and how many more ratings men give.", _plot_gender),
    Plot("ratings_by_age", "Ratings by age group",
         "Look at how the mean rating and the share of 5-star ratings "
         "change with age, and at how few ratings the youngest give. "
         + _MEAN_AXIS, _plot_age),
    Plot("ratings_by_occupation", "Ratings by occupation",
         "Left: ratings and users per occupation code of users.dat (the "
         "two student codes apart); right: their mean ratings. Heavy "
         "raters weigh more in a mean over ratings. " + _MEAN_AXIS,
         _plot_occupation),
    Plot("ratings_by_location", "Ratings by location (zip code)",
         "Left: mean rating per zip area (the first digit; 'other' is a "
         "code that is not five digits, e.g. Canadian); middle: the {top_n} "
         "3-digit prefixes with the most ratings; right: every prefix, its "
         "mean against its number of users: the spread narrows as users "
         "grow, so most of the differences between small prefixes are "
         "noise. " + _MEAN_AXIS, _plot_location),
    Plot("ratings_over_time", "Ratings over time",
         "Look at the burst of activity in the first months and the long "
         "tail after it; weekday effects on the mean are tiny.", _plot_time),
    Plot("mean_rating_by_month", "Mean rating by month",
         "Mean rating by the month of the rating's timestamp, with 95% "
         "intervals. Calendar months mix years and users: most ratings "
         "come from the first months of the data, so a month's mean is "
         "also a cohort effect. Over time, look at how the sparse later "
         "months swing (wide intervals). The y axes span only the shown "
         "means.",
         _plot_monthly_mean),
    Plot("release_decades", "Ratings by release decade",
         "Left: ratings (log scale) and movies per release decade (year "
         "from the title); right: mean rating: older films, rated by "
         "fewer and chosen viewers, score higher.", _plot_decades),
    Plot("most_rated_movies", "Most-rated movies",
         "These are the popularity head that a retrieval model recommends "
         "by default; compare their mean ratings.", _plot_most_rated),
    Plot("best_rated_movies", "Best-rated movies",
         "Means over at least {min_count:,} ratings: classics dominate, "
         "and they are not the most-rated ones. " + _MEAN_AXIS,
         _plot_best_rated),
    Plot("worst_rated_movies", "Worst-rated movies",
         "The lowest means over at least {min_count:,} ratings, lowest "
         "first: look for sequels. " + _MEAN_AXIS, _plot_worst_rated),
    Plot("movies_by_gender", "Most- and best-rated movies by gender",
         "Left: the {group_top} most-rated movies of women and of men; "
         "right: their {group_top} best-rated among movies with at least "
         "{group_min_count:,} ratings from that group. " + _MEAN_AXIS,
         _plot_movies_by_gender),
    Plot("most_rated_by_age", "Most-rated movies by age group",
         "The {group_top} most-rated movies of each age group: look at "
         "how the head moves from recent films (youngest) to older ones "
         "(56+).",
         lambda ctx: _plot_age_rankings(ctx, best=False)),
    Plot("best_rated_by_age", "Best-rated movies by age group",
         "The {group_top} best-rated movies of each age group among those "
         "with at least {group_min_count:,} ratings from the group (a "
         "group's own threshold is lower than the overall {min_count:,}: "
         "the youngest group is small). " + _MEAN_AXIS,
         lambda ctx: _plot_age_rankings(ctx, best=True)),
    Plot("genres", "Genres",
         "Left: how the ratings spread over genres; right: which genres "
         "are rated higher on average (niche genres score best). "
         + _MEAN_AXIS, _plot_genres),
    Plot("directors_and_stars", "Directors and stars",
         "Directors and lead actors by number of ratings and by mean "
         "rating (at least {min_count:,} ratings); unknown names are "
         "left out. Enrichment rows that describe another film count as "
         "unknown too: {flagged}. The rule and the rows are in the table "
         "of flagged rows after the summary. " + _MEAN_AXIS,
         _plot_people),
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


def _flagged_table(flagged: pd.DataFrame) -> str:
  if flagged.empty:
    return "<p>No enrichment row is flagged.</p>"
  head = "".join(f"<th>{h}</th>" for h in (
      "Movie id", "ML-1M title", "Enrichment title", "Enrichment director",
      "Enrichment star", "Ratings"))
  rows = "\n".join(
      f'<tr data-movie-id="{html.escape(str(r.movie_id))}">'
      + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
          r.movie_id, r.movie_title, r.enrichment_title, r.director, r.star,
          f"{r.ratings:,}"))
      + "</tr>" for r in flagged.itertuples())
  return f'<table id="flagged">\n<tr>{head}</tr>\n{rows}\n</table>'


def _html(s: Dict[str, object], sections: List[Tuple[Plot, str, bytes]],
          source: str, params: str, flagged: pd.DataFrame) -> str:
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
<h3>Enrichment rows flagged as another film</h3>
<p>A row of <code>melu/movies_extrainfos.dat</code> is flagged when
{html.escape(WRONG_FILM_RULE)}. The report treats the director and star
of a flagged row as unknown.</p>
{_flagged_table(flagged)}
<ol>
{toc}
</ol>
{body}
</body>
</html>
"""


def write_report(rawdata: raw.RawData, out_dir: str, min_count: int = 50,
                 top_n: int = 20,
                 log: Optional[Callable[[str], None]] = None,
                 enrichment: Optional[bytes] = None) -> str:
  """Writes the PNG plots and `out_dir/index.html`; returns the HTML path.

  `min_count` is the least number of ratings a movie, director or star
  needs to appear in a best- or worst-rated ranking (half of it, at
  least 1, within a gender or age group); `top_n` the ranking length (at
  most 10 per group). `enrichment`: the bytes of movies_extrainfos.dat,
  for `wrong_film_rows` (None: no row is flagged). `log`, if given,
  receives one progress line per plot.
  """
  if rawdata.ratings.empty:
    raise ValueError("no ratings to analyse")
  log = log or (lambda _: None)
  os.makedirs(out_dir, exist_ok=True)
  flagged = wrong_film_rows(enrichment, rawdata.movies, rawdata.ratings)
  ctx = _Context(rawdata, raw.ratings_examples(rawdata), min_count, top_n,
                 flagged, group_top=min(top_n, 10),
                 group_min_count=max(1, min_count // 2))
  values = dict(min_count=min_count, top_n=top_n, group_top=ctx.group_top,
                group_min_count=ctx.group_min_count,
                flagged=_flagged_text(flagged))
  sections = []
  for i, plot in enumerate(PLOTS, 1):
    log(f"plot {i}/{len(PLOTS)}: {plot.title.lower()}")
    path = os.path.join(out_dir, f"{i:02d}_{plot.name}.png")
    fig = plot.draw(ctx)
    _fit_notes(fig)
    fig.savefig(path, dpi=DPI)
    with open(path, "rb") as f:
      sections.append((plot, plot.caption.format(**values), f.read()))
  params = (f"Best- and worst-rated rankings need at least {min_count:,} "
            f"ratings ({ctx.group_min_count:,} within a gender or age "
            f"group); rankings show the top {top_n} ({ctx.group_top} per "
            "group). Times are UTC.")
  summary_values = dict(summary(rawdata), flagged_enrichment_rows=len(flagged))
  index = os.path.join(out_dir, "index.html")
  with open(index, "w", encoding="utf-8") as f:
    f.write(_html(summary_values, sections, rawdata.source, params,
                  flagged))
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
  with open(os.path.join(raw_dir, "melu", "movies_extrainfos.dat"),
            "rb") as f:
    enrichment = f.read()
  index = write_report(rawdata, out_dir, min_count, top_n,
                       log=lambda line: print(line, flush=True),
                       enrichment=enrichment)
  print(f"EDA report written in {time.time() - start:.1f} s: {index}",
        flush=True)
  return index
