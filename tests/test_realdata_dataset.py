"""The dataset on the real files (../shared/data or $TFRS_RAW_DATA)."""

import pytest

from data import raw
from tfrs_pipeline import dataset

pytestmark = pytest.mark.realdata


def test_real_counts(real_raw, real_data_dir):
  counts = dataset.describe(real_data_dir, real_raw)
  assert counts["ratings"] == 487_650
  assert counts["train"] == 389_875
  assert counts["test"] == 97_775
  assert counts["users"] == 6_040
  assert counts["users_with_ratings"] == 2_999
  assert counts["movies"] == 3_883
  assert counts["rated_movies"] == 3_615
  assert counts["director_coverage"]["known"] == 3_605
  assert counts["star_coverage"]["known"] == 3_607
  assert counts["skipped_lines"] == 0


def test_real_raw_cleaning(real_raw):
  data = raw.load_raw(real_raw)
  assert data.users.user_zip_code.str.fullmatch(r"\d{5}").all()
  titles = set(data.movies.movie_title)
  assert any("é" in t for t in titles)  # latin-1 decoded, not mojibake
  assert not any("Ã" in t for t in titles)
