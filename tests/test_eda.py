"""Tests of the EDA report on the generated fake raw data."""

import base64
import contextlib
import datetime
import io
import os
import re
import struct
import sys

import numpy as np
import pytest
from matplotlib import image as mpimg

sys.path.insert(0, os.path.dirname(__file__))
import fakedata  # noqa: E402

from data import eda  # noqa: E402
from data import raw  # noqa: E402

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IMG = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
_ROW = re.compile(r'<tr data-key="(\w+)">.*?<td data-value="([^"]*)">')


# Movies whose fake enrichment row keeps Released and Poster both N/A
# (`_give_posters` gives every other row a date and a poster).
WRONG_FILMS = ("5", "7")


def _give_posters(raw_dir, keep=WRONG_FILMS):
  """Rewrites the fake enrichment file: a release date and a poster for
  every row but those of `keep`; returns the flagged titles expected."""
  path = os.path.join(raw_dir, "melu", "movies_extrainfos.dat")
  with open(path, "rb") as f:
    lines = f.read().decode("utf-8").split("\r\n")
  out = []
  for line in lines:
    fields = line.split("::")
    if line and fields[0] not in keep:
      fields[4] = "01 Jan 1990"
      fields[-1] = "https://example.org/poster.jpg"
    out.append("::".join(fields))
  with open(path, "wb") as f:
    f.write("\r\n".join(out).encode("utf-8"))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  """Runs the CLI hook once on fake data with bad lines skipped."""
  raw_dir = str(tmp_path_factory.mktemp("raw"))
  facts = fakedata.write_raw_dir(raw_dir, bad_lines=True)
  _give_posters(raw_dir)
  out_dir = str(tmp_path_factory.mktemp("eda"))
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    index = eda.run_eda(raw_dir, out_dir, on_bad_line="skip", min_count=5,
                        top_n=10)
  with open(index, encoding="utf-8") as f:
    text = f.read()
  return {"raw_dir": raw_dir, "facts": facts, "out_dir": out_dir,
          "index": index, "html": text, "stdout": stdout.getvalue()}


def _png_size(data: bytes):
  assert data[:8] == _PNG_MAGIC
  assert data[12:16] == b"IHDR"
  return struct.unpack(">II", data[16:24])


def test_report_files(report):
  assert report["index"] == os.path.join(report["out_dir"], "index.html")
  pngs = sorted(f for f in os.listdir(report["out_dir"])
                if f.endswith(".png"))
  assert len(pngs) == len(eda.PLOTS) == 17
  assert [p[:-4] for p in pngs] == [f"{i:02d}_{plot.name}" for i, plot in
                                    enumerate(eda.PLOTS, 1)]


def test_every_section_present(report):
  text = report["html"]
  for i, plot in enumerate(eda.PLOTS, 1):
    assert f"<h2>{i}. {plot.title}</h2>" in text
  for word in ("Rating distribution", "gender", "age group", "over time",
               "Most-rated movies", "Best-rated movies", "Genres",
               "Directors and stars", "coverage", "occupation",
               "Worst-rated movies", "release decade", "by month",
               "zip code", "Most- and best-rated movies by gender",
               "Most-rated movies by age group",
               "Best-rated movies by age group"):
    assert word in text
  captions = re.findall(r'<p class="caption">([^<]+)</p>', text)
  assert len(captions) == len(eda.PLOTS)
  assert all(len(c) > 40 and "{" not in c for c in captions)
  assert "at least 5 ratings" in text  # min_count=5 in the captions
  assert "at least 2 ratings from that group" in text  # min_count // 2


def test_images_embedded_and_valid(report):
  text = report["html"]
  embedded = [base64.b64decode(b) for b in _IMG.findall(text)]
  assert len(embedded) == len(eda.PLOTS)
  assert text.count("<img ") == len(eda.PLOTS)  # no external image
  assert "http://" not in text and "https://" not in text
  pngs = sorted(f for f in os.listdir(report["out_dir"])
                if f.endswith(".png"))
  for data, name in zip(embedded, pngs):
    with open(os.path.join(report["out_dir"], name), "rb") as f:
      assert f.read() == data, name
    width, height = _png_size(data)
    assert width >= 500 and height >= 300, name
    assert len(data) > 10_000, name
    pixels = mpimg.imread(io.BytesIO(data), format="png")
    assert pixels.shape[:2] == (height, width)
    assert float(np.std(pixels[..., :3])) > 0.05, f"{name} looks blank"


def test_progress_lines(report):
  lines = report["stdout"].splitlines()
  assert lines[0].startswith("loading raw data")
  n = len(eda.PLOTS)
  for i in range(1, n + 1):
    assert any(l.startswith(f"plot {i}/{n}: ") for l in lines)
  assert lines[-1].endswith(report["index"])


def _read_lines(path, encoding):
  with open(path, "rb") as f:
    return [l for l in f.read().decode(encoding).splitlines() if l.strip()]


def _expected_summary(raw_dir, facts):
  """The summary computed straight from the files, without data.raw."""
  ml = os.path.join(raw_dir, "ml-1m")
  users = _read_lines(os.path.join(ml, "users.dat"), "latin-1")
  movies = _read_lines(os.path.join(ml, "movies.dat"), "latin-1")
  lines = _read_lines(os.path.join(ml, "ratings.dat"), "latin-1")
  good = [l.split("::") for l in lines if l not in fakedata.BAD_RATING_LINES]
  stars = [int(r[2]) for r in good]
  stamps = [int(r[3]) for r in good]
  rated_users = {r[0] for r in good}
  rated_movies = {r[1] for r in good}
  extra = {}
  for l in _read_lines(os.path.join(raw_dir, "melu",
                                    "movies_extrainfos.dat"), "utf-8"):
    f = l.split("::")
    extra[f[0]] = tuple(f[i].split(",")[0].strip() not in ("", "N/A")
                        for i in (6, 8))
  day = lambda t: datetime.datetime.fromtimestamp(
      t, datetime.timezone.utc).strftime("%Y-%m-%d")
  known = lambda j: sum(extra.get(m, (False, False))[j]
                        for m in rated_movies) / len(rated_movies)
  assert len(good) == facts["num_ratings"]
  return {
      "num_ratings": len(good),
      "num_users": len(users),
      "num_users_with_ratings": len(rated_users),
      "num_movies": len(movies),
      "num_rated_movies": len(rated_movies),
      "mean_rating": sum(stars) / len(stars),
      "sparsity": 1 - len(good) / (len(rated_users) * len(rated_movies)),
      "date_range": f"{day(min(stamps))}/{day(max(stamps))}",
      "director_coverage": known(0),
      "star_coverage": known(1),
      "skipped_lines": len(fakedata.BAD_RATING_LINES),
      "flagged_enrichment_rows": len(WRONG_FILMS),
  }


def test_summary_numbers(report):
  shown = dict(_ROW.findall(report["html"]))
  expected = _expected_summary(report["raw_dir"], report["facts"])
  assert set(shown) == set(expected)
  for key, value in expected.items():
    if isinstance(value, float):
      assert float(shown[key]) == pytest.approx(value, abs=1e-4), key
    else:
      assert shown[key] == str(value), key
  facts = report["facts"]
  assert shown["num_users"] == str(facts["num_users"])
  assert shown["num_users_with_ratings"] == str(
      facts["num_users_with_ratings"])
  assert "4 (ratings.dat: 4)" in report["html"]


def test_short_label_keeps_year():
  title = "Dr. Strangelove or: How I Learned to Stop Worrying (1963)"
  short = eda._short(title, 30)
  assert len(short) == 30 and short.endswith("\u2026 (1963)")
  assert eda._short("Café Society, The (1995)") == "Café Society, The (1995)"


def test_empty_rankings_and_no_ratings(tmp_path):
  fakedata.write_raw_dir(str(tmp_path), num_users=4, num_movies=6,
                         ratings_per_user=3)
  data = raw.load_raw(str(tmp_path))
  ctx = eda._Context(data, raw.ratings_examples(data), min_count=1000,
                     top_n=5)
  fig = eda._plot_best_rated(ctx)  # no movie qualifies: a note, no error
  assert "no movie with at least 1,000 ratings" in [
      t.get_text() for t in fig.axes[0].texts]
  fig = eda._plot_worst_rated(ctx)
  assert "no movie with at least 1,000 ratings" in [
      t.get_text() for t in fig.axes[0].texts]
  ctx.group_min_count = 1000
  fig = eda._plot_age_rankings(ctx, best=True)
  notes = [t.get_text() for ax in fig.axes for t in ax.texts]
  assert notes and all(n == "no movie with at least 1,000 ratings"
                       for n in notes)
  data.ratings = data.ratings.iloc[:0]
  with pytest.raises(ValueError, match="no ratings"):
    eda.write_report(data, str(tmp_path / "out"))


def test_flagged_enrichment_rows(report):
  text = report["html"]
  flagged = re.findall(r'<tr data-movie-id="(\d+)">', text)
  assert sorted(flagged) == sorted(WRONG_FILMS)
  assert "Released and Poster fields are both N/A" in text
  assert "2 rows (2 of them rated" in text  # the directors caption


def _context(raw_dir, enrichment=None, min_count=5):
  data = raw.load_raw(raw_dir)
  flagged = eda.wrong_film_rows(enrichment, data.movies, data.ratings)
  return eda._Context(data, raw.ratings_examples(data), min_count, 10,
                      flagged, group_top=5, group_min_count=2)


def test_flagged_rows_lose_director_and_star(tmp_path):
  fakedata.write_raw_dir(str(tmp_path))
  _give_posters(str(tmp_path))
  with open(tmp_path / "melu" / "movies_extrainfos.dat", "rb") as f:
    ctx = _context(str(tmp_path), f.read())
  assert sorted(ctx.flagged.movie_id) == sorted(WRONG_FILMS)
  people = ctx.people
  wrong = people.movie_id.isin(WRONG_FILMS)
  assert (people[wrong].director == raw.UNKNOWN).all()
  assert (people[wrong].star == raw.UNKNOWN).all()
  assert (people[~wrong].director == ctx.examples[~wrong].director).all()
  assert (ctx.examples[wrong].director != raw.UNKNOWN).any()


def test_mean_axes_start_below_the_smallest_mean(fake_raw):
  assert eda.mean_axis_start([4.31, 4.6]) == pytest.approx(4.2)
  assert eda.mean_axis_start([3.5]) == pytest.approx(3.4)
  assert eda.mean_axis_start([1.0, 2.0]) == pytest.approx(0.9)
  ctx = _context(fake_raw["path"])
  for draw in (eda._plot_best_rated, eda._plot_worst_rated,
               eda._plot_genres, eda._plot_occupation):
    fig = draw(ctx)
    for ax in fig.axes:
      label = ax.get_xlabel()
      if not label.startswith("Mean rating"):
        continue
      lo = ax.get_xlim()[0]
      means = [p.get_x() + p.get_width() for p in ax.patches]
      assert lo > 1.0 and lo < min(means) <= lo + 0.2, draw.__name__
      assert f"axis starts at {lo:.1f}" in label


def test_notes_fit_inside_their_axes(fake_raw):
  ctx = _context(fake_raw["path"])
  for plot in eda.PLOTS:
    fig = plot.draw(ctx)
    eda._fit_notes(fig)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
      right = ax.get_window_extent(renderer).x1
      for t in ax.texts:
        if t.get_gid() == eda._NOTE:
          assert t.get_window_extent(renderer).x1 <= right + 1, plot.name
    for ax in fig.axes:  # every drawn panel has a title and axis labels
      if ax.axison and (ax.patches or ax.lines or ax.collections):
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), (
            plot.name, ax.get_title())


def test_wrong_film_rule_on_the_real_files(real_raw):
  data = raw.load_raw(real_raw)
  with open(os.path.join(real_raw, "melu", "movies_extrainfos.dat"),
            "rb") as f:
    flagged = eda.wrong_film_rows(f.read(), data.movies, data.ratings)
  by_id = dict(zip(flagged.movie_id, flagged.director))
  assert by_id["922"] == "Ulli Lommel"  # Sunset Blvd. (1950)
  assert by_id["3683"] == "Seung-hyun Kim"  # Blood Simple (1984)
  assert len(flagged) == 14
  assert "Sunset Blvd." in flagged.movie_title.iloc[1]  # second most rated
  ctx = eda._Context(data, raw.ratings_examples(data), 50, 20, flagged)
  people = ctx.people
  assert "Ulli Lommel" not in set(people.director)
  assert "Ulli Lommel" in set(ctx.examples.director)
