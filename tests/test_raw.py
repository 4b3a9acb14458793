"""Raw-file reader: cleaning rules, bad-line handling, TFDS agreement."""

import os
import zipfile

import pytest

import fakedata
from data import raw


def _rewrite(path, name, mutate):
  with open(path, "rb") as f:
    lines = f.read().decode("latin-1").splitlines()
  with open(path, "wb") as f:
    f.write(("\n".join(mutate(lines)) + "\n").encode("latin-1"))
  return path


def test_clean_data_counts_and_cleaning(fake_raw):
  data = raw.load_raw(fake_raw["path"])
  assert len(data.users) == fake_raw["num_users"]
  assert len(data.movies) == fake_raw["num_movies"]
  assert len(data.ratings) == fake_raw["num_ratings"]
  assert data.report.skipped_total == 0
  # ZIP+4 and over-long codes reduced to 5 digits.
  assert data.users.user_zip_code.str.fullmatch(r"\d{5}").all()
  assert data.report.zip_codes_cleaned > 0
  user7 = data.users.set_index("user_id").loc["7"]
  assert user7.user_zip_code == "10007"  # written as 10007-1234
  # Latin-1 title decoded; year parsed.
  movie1 = data.movies.set_index("movie_id").loc["1"]
  assert movie1.movie_title == "Café Society, The (1995)"
  assert movie1.release_year == 1995
  # Names trimmed, role suffix dropped, first-listed director / first star.
  assert movie1.director == "Bo Widerberg"
  movie11 = data.movies.set_index("movie_id").loc["11"]
  # Written as "Bo Widerberg , Second Person(co-director)".
  assert movie11.director == "Bo Widerberg"
  assert "Ed Wood" in set(data.movies.director)
  # Movies without enrichment kept with the explicit unknown token.
  missing = data.movies[data.movies.movie_id.astype(int) % 3 == 0]
  assert len(missing) > 0
  assert (missing.director == raw.UNKNOWN).all()
  assert (missing.star == raw.UNKNOWN).all()
  assert data.movies.set_index("movie_id").loc["4"].director == raw.UNKNOWN
  assert data.movies.set_index("movie_id").loc["4"].star != raw.UNKNOWN


def test_clean_zip_code():
  assert raw.clean_zip_code("98107-2117") == "98107"
  assert raw.clean_zip_code("5849574") == "58495"
  assert raw.clean_zip_code("02139") == "02139"
  assert raw.clean_zip_code("") == raw.UNKNOWN


@pytest.mark.parametrize("bad_line,problem", list(zip(
    fakedata.BAD_RATING_LINES,
    ["rating '7' is outside 1-5", "unknown movie '99999'",
     "unknown user '99999'", "expected 4 '::'-separated fields"])))
def test_bad_rating_line_stops_with_file_line_and_problem(
    tmp_path, bad_line, problem):
  facts = fakedata.write_raw_dir(str(tmp_path))
  path = os.path.join(facts["path"], "ml-1m", "ratings.dat")
  _rewrite(path, "ratings.dat", lambda lines: lines + [bad_line])
  with pytest.raises(raw.BadInputError) as e:
    raw.load_raw(facts["path"])
  message = str(e.value)
  assert f"ratings.dat:{facts['num_ratings'] + 1}:" in message
  assert problem in message


def test_skip_mode_counts_every_bad_line(tmp_path):
  facts = fakedata.write_raw_dir(str(tmp_path), bad_lines=True)
  data = raw.load_raw(facts["path"], on_bad_line="skip")
  assert data.report.skipped == {"ratings.dat": facts["num_bad_rating_lines"]}
  assert len(data.ratings) == facts["num_ratings"]


@pytest.mark.parametrize("filename,line,problem", [
    ("users.dat", "999::X::25::3::12345", "gender 'X'"),
    ("users.dat", "999::M::26::3::12345", "age '26'"),
    ("users.dat", "999::M::25::21::12345", "occupation '21'"),
    ("movies.dat", "999::Bad (2000)::NotAGenre", "unknown genre"),
    ("movies.dat", "1::Duplicate (2000)::Drama", "duplicate movie id 1"),
])
def test_bad_user_and_movie_lines(tmp_path, filename, line, problem):
  facts = fakedata.write_raw_dir(str(tmp_path))
  _rewrite(os.path.join(facts["path"], "ml-1m", filename), filename,
           lambda lines: lines + [line])
  with pytest.raises(raw.BadInputError, match=f"{filename}:\\d+: .*{problem}"):
    raw.load_raw(facts["path"])
  skipped = raw.load_raw(facts["path"], on_bad_line="skip")
  assert skipped.report.skipped[filename] == 1


def _insert_bytes(path, line_index, transform):
  """Rewrites line `line_index` (0-based) of `path` with `transform`
  (bytes -> bytes), every other byte kept."""
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")
  lines[line_index] = transform(lines[line_index])
  with open(path, "wb") as f:
    f.write(b"\n".join(lines))


def test_hostile_bytes_name_the_true_line(tmp_path):
  facts = fakedata.write_raw_dir(str(tmp_path))
  ml = os.path.join(facts["path"], "ml-1m")
  # A NEL (0x85) and a form feed inside a title are not line breaks: the
  # file reads as before, the title's whitespace is normalised, and a bad
  # line after it is named by its true number.
  _insert_bytes(os.path.join(ml, "movies.dat"), 1,
                lambda b: b.replace(b" (", b"\x85\x0c (", 1))
  data = raw.load_raw(facts["path"])
  assert len(data.movies) == facts["num_movies"]
  assert data.report.skipped_total == 0
  assert data.movies.set_index("movie_id").loc["2"].movie_title == (
      "Toy Story (1995)")
  _insert_bytes(os.path.join(ml, "movies.dat"), 3,
                lambda b: b.split(b"::")[0] + b"::Bad (2000)::NotAGenre")
  with pytest.raises(raw.BadInputError, match=r"movies.dat:4: .*unknown genre"):
    raw.load_raw(facts["path"])


@pytest.mark.parametrize("filename,line_index,transform,problem", [
    # A superscript 2 (latin-1 0xB2) passes str.isdigit but is no digit.
    ("ml-1m/ratings.dat", 4,
     lambda b: b.rsplit(b"::", 2)[0] + b"::\xb2::978300760",
     "rating '\xb2' is outside 1-5"),
    ("ml-1m/users.dat", 2,
     lambda b: b.split(b"::")[0] + b"::M::2\xb2::3::12345", "age '2\xb2'"),
    # Bytes that are not UTF-8 in the enrichment file.
    ("melu/movies_extrainfos.dat", 1, lambda b: b"\xff\xfe" + b,
     "not valid utf-8 text (byte 0xff at column 1)"),
])
def test_hostile_bytes_are_bad_lines(tmp_path, filename, line_index,
                                     transform, problem):
  facts = fakedata.write_raw_dir(str(tmp_path))
  _insert_bytes(os.path.join(facts["path"], filename), line_index, transform)
  name = os.path.basename(filename)
  with pytest.raises(raw.BadInputError) as e:
    raw.load_raw(facts["path"])
  assert f"{name}:{line_index + 1}: {problem}" in str(e.value)
  # Skip mode counts it (a skipped user's ratings count as ratings of an
  # unknown user).
  skipped = raw.load_raw(facts["path"], on_bad_line="skip")
  assert skipped.report.skipped[name] == 1
  assert set(skipped.report.skipped) <= {name, "ratings.dat"}


def test_reads_official_zip_layout(tmp_path, fake_raw):
  zipped = tmp_path / "zipped"
  (zipped / "melu").mkdir(parents=True)
  with zipfile.ZipFile(zipped / "ml-1m.zip", "w") as z:
    for name in ("users.dat", "movies.dat", "ratings.dat"):
      z.write(os.path.join(fake_raw["path"], "ml-1m", name), f"ml-1m/{name}")
  os.link(os.path.join(fake_raw["path"], "melu", "movies_extrainfos.dat"),
          zipped / "melu" / "movies_extrainfos.dat")
  a = raw.load_raw(str(zipped))
  b = raw.load_raw(fake_raw["path"])
  assert a.ratings.equals(b.ratings)
  assert a.movies.equals(b.movies)


def test_missing_data_says_how_to_supply(tmp_path):
  with pytest.raises(raw.MissingDataError, match="--raw_data"):
    raw.load_raw(str(tmp_path))
  with pytest.raises(raw.MissingDataError, match="does not exist"):
    raw.resolve_raw_dir(str(tmp_path / "nope"))


def test_agrees_with_tfds_movielens_parser(fake_raw):
  """Same semantics as TFDS' own ML-1M parser on clean data."""
  from tensorflow_datasets.structured import movielens_parsing
  ours = raw.ratings_examples(raw.load_raw(fake_raw["path"]))
  ours = ours.set_index(["user_id", "movie_id"])
  theirs = list(movielens_parsing.parse_1m_ratings_data(
      os.path.join(fake_raw["path"], "ml-1m")))
  assert len(theirs) == len(ours)
  for _, ex in theirs:
    row = ours.loc[(ex["user_id"], ex["movie_id"])]
    assert row.movie_title == ex["movie_title"]
    assert row.movie_genres == ex["movie_genres"]
    assert row.user_gender == ex["user_gender"]
    assert row.bucketized_user_age == float(ex["bucketized_user_age"])
    assert row.user_occupation_label == ex["user_occupation_label"]
    assert row.user_occupation_text == ex["user_occupation_text"]
    assert row.user_rating == float(ex["user_rating"])
    assert row.timestamp == int(ex["timestamp"])
    assert row.user_zip_code == raw.clean_zip_code(ex["user_zip_code"])
