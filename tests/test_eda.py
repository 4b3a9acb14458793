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


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  """Runs the CLI hook once on fake data with bad lines skipped."""
  raw_dir = str(tmp_path_factory.mktemp("raw"))
  facts = fakedata.write_raw_dir(raw_dir, bad_lines=True)
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
  assert len(pngs) == len(eda.PLOTS) == 9
  assert pngs[0].startswith("01_") and pngs[-1].startswith("09_")


def test_every_section_present(report):
  text = report["html"]
  for i, plot in enumerate(eda.PLOTS, 1):
    assert f"<h2>{i}. {plot.title}</h2>" in text
  for word in ("Rating distribution", "gender", "age group", "over time",
               "Most-rated movies", "Best-rated movies", "Genres",
               "Directors and stars", "coverage"):
    assert word in text
  assert text.count('<p class="caption">') == len(eda.PLOTS)


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
  for i in range(1, 10):
    assert any(l.startswith(f"plot {i}/9: ") for l in lines)
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
  data.ratings = data.ratings.iloc[:0]
  with pytest.raises(ValueError, match="no ratings"):
    eda.write_report(data, str(tmp_path / "out"))
