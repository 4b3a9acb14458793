"""Strict reader for the raw MovieLens-1M files and the MeLU enrichment file.

The raw layout (what `--raw_data` / `TFRS_RAW_DATA` points at) is

    RAW/ml-1m/{users,movies,ratings}.dat    (or RAW/ml-1m.zip)
    RAW/melu/movies_extrainfos.dat

Every line is validated. A bad line either stops the run with a
`BadInputError` naming the file, the line number and the problem
(`on_bad_line="error"`, the default) or is skipped and counted
(`on_bad_line="skip"`); nothing is dropped silently. Cleaning rules (the
ones the capstone report applied) are documented on each function.

The semantics follow TensorFlow Datasets' own MovieLens-1M parser
(`tensorflow_datasets.structured.movielens_parsing.parse_1m_ratings_data`):
same occupation labels, `Children's` -> `Children`, gender as a bool.
`tests/test_raw.py` checks that both readers agree on clean data.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import hashlib
import os
import re
import zipfile
from typing import Dict, Iterator, List, Optional, Tuple

import pandas as pd

from tfrs_pipeline import errors

RAW_DATA_ENV = "TFRS_RAW_DATA"
UNKNOWN = "<unknown>"  # explicit token for a missing director or star
ON_BAD_LINE_CHOICES = ("error", "skip")

# Same index -> text table as TFDS's parse_1m_ratings_data.
OCCUPATIONS = (
    "other/not specified", "academic/educator", "artist", "clerical/admin",
    "college/grad student", "customer service", "doctor/health care",
    "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
# TFDS merges both student occupations into the `student` label.
_STUDENT_TEXTS = ("K-12 student", "college/grad student")


def occupation_label(code: int) -> str:
  """The TFDS occupation label of an ML-1M `users.dat` code (0..20)."""
  text = OCCUPATIONS[int(code)]
  return "student" if text in _STUDENT_TEXTS else text
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)
GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
    "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_ROLE_SUFFIX = re.compile(r"\s*\([^)]*\)\s*$")  # "Andrew Stanton(co-director)"
_INT = re.compile(r"[0-9]{1,18}")
_BLANK = " \t\r"


class BadInputError(errors.InputError):
  """A raw data file has a line that cannot be used."""


class MissingDataError(errors.MissingError):
  """The raw data could not be found."""


@dataclasses.dataclass
class ParseReport:
  """What the reader saw: counts of skipped lines per file and coverage."""
  skipped: Dict[str, int] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(int))
  examples: List[str] = dataclasses.field(default_factory=list)
  zip_codes_cleaned: int = 0
  enrichment_rows_unmatched: int = 0

  @property
  def skipped_total(self) -> int:
    return sum(self.skipped.values())

  def as_dict(self) -> dict:
    return {
        "skipped_lines": dict(self.skipped),
        "skipped_total": self.skipped_total,
        "skipped_examples": self.examples[:20],
        "zip_codes_cleaned": self.zip_codes_cleaned,
        "enrichment_rows_unmatched": self.enrichment_rows_unmatched,
    }


@dataclasses.dataclass
class RawData:
  """The three cleaned tables.

  users:   one row per user; TFDS demographic columns.
  movies:  one row per movie; movie_id, movie_title, movie_genres (list),
           release_year, director, star.
  ratings: one row per rating; user_id, movie_id, user_rating, timestamp.
  """
  users: pd.DataFrame
  movies: pd.DataFrame
  ratings: pd.DataFrame
  report: ParseReport
  source: str


class _LineChecker:
  """Raises or counts a bad line, depending on `on_bad_line`."""

  def __init__(self, on_bad_line: str, report: ParseReport):
    if on_bad_line not in ON_BAD_LINE_CHOICES:
      raise ValueError(
          f"on_bad_line must be one of {ON_BAD_LINE_CHOICES}, got "
          f"{on_bad_line!r}")
    self.on_bad_line = on_bad_line
    self.report = report

  def bad(self, filename: str, line_no: int, problem: str) -> None:
    message = f"{filename}:{line_no}: {problem}"
    if self.on_bad_line == "error":
      raise BadInputError(
          message + " (rerun with --on_bad_line=skip to skip and count such "
          "lines)")
    self.report.skipped[filename] += 1
    self.report.examples.append(message)


def clean_zip_code(zip_code: str) -> str:
  """Reduces a zip code to its first five digits.

  `98107-2117` -> `98107`; `5849574` -> `58495`. A code with fewer than
  five digits keeps the digits it has (`E1 4S` would keep `14`); an empty
  code becomes UNKNOWN.
  """
  digits = re.sub(r"\D", "", zip_code.split("-")[0]) or re.sub(
      r"\D", "", zip_code)
  return digits[:5] if digits else UNKNOWN


def clean_name(name: str) -> str:
  """Trims a person's name and drops a role suffix like `(co-director)`."""
  name = _ROLE_SUFFIX.sub("", name.strip())
  name = " ".join(name.split())
  return name if name and name.upper() != "N/A" else UNKNOWN


def first_name_in_list(names: str) -> str:
  """First entry of a comma-separated billing list, cleaned."""
  return clean_name(names.split(",")[0]) if names else UNKNOWN


def _split_lines(raw: bytes, encoding: str, check: "_LineChecker",
                 filename: str) -> Iterator[Tuple[int, str]]:
  """(1-based line number, text) of the non-blank lines.

  Lines end at "\n" only (a NEL or form feed inside a field is no line
  break); a "\r" before it is dropped (CRLF files read as LF ones). A
  UTF-8 byte-order mark at the start is dropped and makes the file UTF-8
  (an editor saved it so). Bad lines: one that does not decode, one with
  a NUL byte (text has none; zero-filled blocks are what a crash leaves),
  and a non-blank last line without its newline (a cut-off file: its last
  number may be cut short). Blank means only spaces, tabs and "\r".
  """
  note, bom = "", 0
  if raw.startswith(codecs.BOM_UTF8):
    raw, encoding, bom = raw[len(codecs.BOM_UTF8):], "utf-8", 3
    note = "; the file starts with a UTF-8 byte-order mark"
  chunks = raw.split(b"\n")
  for line_no, chunk in enumerate(chunks, start=1):
    if not chunk.strip(_BLANK.encode()):
      continue
    if line_no == len(chunks):
      check.bad(filename, line_no, "last line has no newline (file "
                "truncated?)")
      continue
    try:
      line = chunk.decode(encoding)
    except UnicodeDecodeError as e:
      column = e.start + 1 + (bom if line_no == 1 else 0)
      check.bad(filename, line_no, f"not valid {encoding} text (byte "
                f"0x{chunk[e.start]:02x} at column {column}{note})")
      continue
    if "\x00" in line:
      column = chunk.index(b"\x00") + 1 + (bom if line_no == 1 else 0)
      check.bad(filename, line_no, f"NUL byte at column {column} (file "
                "corrupted?)")
      continue
    yield line_no, line.removesuffix("\r")


def _fields(line: str) -> List[str]:
  """The '::'-separated fields, spaces and tabs around each dropped."""
  return [f.strip(" \t") for f in line.split("::")]


def _is_int(text: str) -> bool:
  """1 to 18 ASCII digits (`str.isdigit` also accepts e.g. a superscript
  2, which `int` rejects; 18 digits always fit an int64)."""
  return _INT.fullmatch(text) is not None


def _show(text: str) -> str:
  """A field for a one-line message: quoted, escaped, at most 40 chars."""
  return repr(text if len(text) <= 40 else text[:40] + "...")


def _require_rows(count: int, filename: str, what: str,
                  report: ParseReport) -> None:
  """A file that gives no rows at all is an error in both modes."""
  if count:
    return
  skipped = report.skipped.get(filename, 0)
  why = (f"all {skipped} lines are bad and were skipped" if skipped
         else "the file is empty")
  raise BadInputError(f"{filename}: no {what} ({why})")


def parse_users(raw: bytes, check: _LineChecker,
                filename: str = "users.dat") -> pd.DataFrame:
  """users.dat: `UserID::Gender::Age::Occupation::Zip-code`."""
  rows, seen = [], set()
  for line_no, line in _split_lines(raw, "latin-1", check, filename):
    fields = _fields(line)
    if len(fields) != 5:
      check.bad(filename, line_no, f"expected 5 '::'-separated fields, got "
                f"{len(fields)}: {line[:80]!r}")
      continue
    user_id, gender, age, occupation, zip_code = fields
    problem = None
    if not _is_int(user_id):
      problem = f"user id {_show(user_id)} is not a positive integer"
    elif user_id in seen:
      problem = f"duplicate user id {user_id}"
    elif gender not in ("M", "F"):
      problem = f"gender {_show(gender)} is not M or F"
    elif not _is_int(age) or int(age) not in AGE_BUCKETS:
      problem = (f"age {_show(age)} is not one of the ML-1M buckets "
                 f"{AGE_BUCKETS}")
    elif not _is_int(occupation) or int(occupation) >= len(OCCUPATIONS):
      problem = (f"occupation {_show(occupation)} is not in "
                 f"0..{len(OCCUPATIONS) - 1}")
    if problem:
      check.bad(filename, line_no, problem)
      continue
    seen.add(user_id)
    text = OCCUPATIONS[int(occupation)]
    clean_zip = clean_zip_code(zip_code)
    if clean_zip != zip_code:
      check.report.zip_codes_cleaned += 1
    rows.append({
        "user_id": user_id,
        "user_gender": gender == "M",
        "bucketized_user_age": float(age),
        # ML-1M publishes only the age bucket; the raw age is that bucket.
        "raw_user_age": float(age),
        "user_occupation_label": occupation_label(int(occupation)),
        "user_occupation_text": text,
        "user_zip_code": clean_zip,
    })
  return pd.DataFrame(rows, columns=[
      "user_id", "user_gender", "bucketized_user_age", "raw_user_age",
      "user_occupation_label", "user_occupation_text", "user_zip_code"])


def parse_movies(raw: bytes, check: _LineChecker,
                 filename: str = "movies.dat") -> pd.DataFrame:
  """movies.dat (latin-1): `MovieID::Title::Genres` with `|`-joined genres."""
  rows, seen = [], set()
  for line_no, line in _split_lines(raw, "latin-1", check, filename):
    fields = _fields(line)
    if len(fields) != 3:
      check.bad(filename, line_no, f"expected 3 '::'-separated fields, got "
                f"{len(fields)}: {line[:80]!r}")
      continue
    movie_id, title, genres = fields
    genre_list = [
        "Children" if g == "Children's" else g
        for g in genres.split("|") if g
    ]
    unknown = [g for g in genre_list if g not in GENRES]
    problem = None
    if not _is_int(movie_id):
      problem = f"movie id {_show(movie_id)} is not a positive integer"
    elif movie_id in seen:
      problem = f"duplicate movie id {movie_id}"
    elif not title:
      problem = "empty title"
    elif not genre_list:
      problem = "no genres"
    elif unknown:
      problem = f"unknown genre(s) {', '.join(map(_show, unknown[:5]))}"
    if problem:
      check.bad(filename, line_no, problem)
      continue
    seen.add(movie_id)
    year = _TITLE_YEAR.search(title)
    rows.append({
        "movie_id": movie_id,
        "movie_title": " ".join(title.split()),
        "movie_genres": genre_list,
        "release_year": int(year.group(1)) if year else 0,
    })
  return pd.DataFrame(rows, columns=[
      "movie_id", "movie_title", "movie_genres", "release_year"])


def parse_ratings(raw: bytes, check: _LineChecker, user_ids: set,
                  movie_ids: set, filename: str = "ratings.dat"
                  ) -> pd.DataFrame:
  """ratings.dat: `UserID::MovieID::Rating::Timestamp`, rating 1..5."""
  users, movies, ratings, stamps = [], [], [], []
  seen = set()
  for line_no, line in _split_lines(raw, "latin-1", check, filename):
    fields = _fields(line)
    if len(fields) != 4:
      check.bad(filename, line_no, f"expected 4 '::'-separated fields, got "
                f"{len(fields)}: {line[:80]!r}")
      continue
    user_id, movie_id, rating, stamp = fields
    problem = None
    if not _is_int(rating) or not 1 <= int(rating) <= 5:
      problem = f"rating {_show(rating)} is outside 1-5"
    elif not _is_int(stamp):
      problem = (f"timestamp {_show(stamp)} is not a non-negative integer "
                 "(at most 18 digits)")
    elif user_id not in user_ids:
      problem = f"rating of unknown user {_show(user_id)} (not in users.dat)"
    elif movie_id not in movie_ids:
      problem = (f"rating of unknown movie {_show(movie_id)} (not in "
                 "movies.dat)")
    elif (user_id, movie_id) in seen:
      problem = f"duplicate rating of movie {movie_id} by user {user_id}"
    if problem:
      check.bad(filename, line_no, problem)
      continue
    seen.add((user_id, movie_id))
    users.append(user_id)
    movies.append(movie_id)
    ratings.append(float(rating))
    stamps.append(int(stamp))
  return pd.DataFrame({
      "user_id": pd.Series(users, dtype=object),
      "movie_id": pd.Series(movies, dtype=object),
      "user_rating": pd.Series(ratings, dtype="float32"),
      "timestamp": pd.Series(stamps, dtype="int64"),
  })


def parse_enrichment(raw: bytes, check: _LineChecker,
                     filename: str = "movies_extrainfos.dat"
                     ) -> Dict[str, Tuple[str, str]]:
  """MeLU movies_extrainfos.dat (UTF-8): movie id -> (director, star).

  Fields: MovieID::Title::Year::Rated::Released::Genres::Director(s)::
  Writer(s)::Actors::Plot::Poster. The first-listed director and the
  first-billed actor are kept; `N/A` becomes UNKNOWN. A movie id listed
  twice is a bad line (which entry to keep would be a guess).
  """
  out = {}
  for line_no, line in _split_lines(raw, "utf-8", check, filename):
    fields = _fields(line)
    if len(fields) < 11:
      check.bad(filename, line_no, f"expected 11 '::'-separated fields, got "
                f"{len(fields)}")
      continue
    movie_id = fields[0]
    if not _is_int(movie_id):
      check.bad(filename, line_no, f"movie id {_show(movie_id)} is not a "
                "positive integer")
      continue
    if movie_id in out:
      check.bad(filename, line_no, f"duplicate movie id {movie_id}")
      continue
    out[movie_id] = (first_name_in_list(fields[6]),
                     first_name_in_list(fields[8]))
  return out


# --------------------------------------------------------------------------
# Locating the files.


def read_ml1m_files(raw_dir: str) -> Tuple[Dict[str, bytes], str]:
  """Returns {users,movies,ratings}.dat bytes from `ml-1m/` or `ml-1m.zip`."""
  names = ("users.dat", "movies.dat", "ratings.dat")
  folder = os.path.join(raw_dir, "ml-1m")
  if all(os.path.isfile(os.path.join(folder, n)) for n in names):
    out = {}
    for n in names:
      with open(os.path.join(folder, n), "rb") as f:
        out[n] = f.read()
    return out, folder
  archive = os.path.join(raw_dir, "ml-1m.zip")
  present = [n for n in names if os.path.isfile(os.path.join(folder, n))]
  if present and not os.path.isfile(archive):
    missing = next(n for n in names if n not in present)
    raise MissingDataError(f"missing {os.path.join(folder, missing)} (the "
                           f"folder has {', '.join(present)}). "
                           + HOW_TO_SUPPLY)
  if os.path.isfile(archive):
    with zipfile.ZipFile(archive) as z:
      missing = [n for n in names if f"ml-1m/{n}" not in z.namelist()]
      if missing:
        raise MissingDataError(f"{archive} lacks ml-1m/{missing[0]}")
      return {n: z.read(f"ml-1m/{n}") for n in names}, archive
  raise MissingDataError(
      f"No MovieLens-1M files in {raw_dir!r}: expected {folder}/users.dat, "
      f"movies.dat and ratings.dat, or {archive}. " + HOW_TO_SUPPLY)


HOW_TO_SUPPLY = (
    "Give a directory with ml-1m/ (or ml-1m.zip) and "
    "melu/movies_extrainfos.dat via --raw_data=DIR or the environment "
    f"variable {RAW_DATA_ENV}; without either, `tfrs-pipeline data prepare` "
    "downloads the official files when online.")


def resolve_raw_dir(raw_data: Optional[str]) -> Optional[str]:
  """The raw directory from the flag, else the environment, else None."""
  raw = raw_data or os.environ.get(RAW_DATA_ENV) or None
  if raw and not os.path.isdir(raw):
    raise MissingDataError(f"raw data directory {raw!r} does not exist. "
                           + HOW_TO_SUPPLY)
  return raw


def load_raw_files(ml1m: Dict[str, bytes], enrichment: bytes,
                   on_bad_line: str = "error", source: str = "") -> RawData:
  """Parses and cleans already-read file contents."""
  report = ParseReport()
  check = _LineChecker(on_bad_line, report)
  users = parse_users(ml1m["users.dat"], check)
  _require_rows(len(users), "users.dat", "users", report)
  movies = parse_movies(ml1m["movies.dat"], check)
  _require_rows(len(movies), "movies.dat", "movies", report)
  ratings = parse_ratings(ml1m["ratings.dat"], check,
                          set(users.user_id), set(movies.movie_id))
  _require_rows(len(ratings), "ratings.dat", "ratings", report)
  extra = parse_enrichment(enrichment, check)
  _require_rows(len(extra), "movies_extrainfos.dat", "movies", report)
  known = set(movies.movie_id)
  report.enrichment_rows_unmatched = sum(1 for m in extra if m not in known)
  movies["director"] = [extra.get(m, (UNKNOWN, UNKNOWN))[0]
                        for m in movies.movie_id]
  movies["star"] = [extra.get(m, (UNKNOWN, UNKNOWN))[1]
                    for m in movies.movie_id]
  return RawData(users=users, movies=movies, ratings=ratings, report=report,
                 source=source)


def load_raw(raw_dir: str, on_bad_line: str = "error") -> RawData:
  """Reads and cleans the raw files under `raw_dir` (layout in module doc)."""
  ml1m, where = read_ml1m_files(raw_dir)
  extra_path = os.path.join(raw_dir, "melu", "movies_extrainfos.dat")
  if not os.path.isfile(extra_path):
    raise MissingDataError(f"missing enrichment file {extra_path}. "
                           + HOW_TO_SUPPLY)
  with open(extra_path, "rb") as f:
    enrichment = f.read()
  return load_raw_files(ml1m, enrichment, on_bad_line,
                        source=os.path.abspath(where))


def fingerprint(raw_dir: str) -> str:
  """Identity of the raw files: names, sizes and a digest of their bytes
  (not mtimes: a copy of the same files must not trigger a rebuild; the
  ~16 MB of ML-1M plus extras hash in well under a second)."""
  digest = hashlib.sha256()
  parts = []
  for root, _, files in sorted(os.walk(raw_dir)):
    for name in sorted(files):
      if name.endswith((".dat", ".zip")):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, raw_dir)
        parts.append(f"{rel}:{os.path.getsize(path)}")
        digest.update(rel.encode())
        with open(path, "rb") as f:
          for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
  return "|".join(parts) + f"|sha256:{digest.hexdigest()[:16]}"


def ratings_examples(raw: RawData) -> pd.DataFrame:
  """One row per rating with every user and movie column joined in."""
  out = raw.ratings.merge(raw.users, on="user_id", how="left", validate="m:1")
  return out.merge(raw.movies, on="movie_id", how="left", validate="m:1")



# --------------------------------------------------------------------------
# The larger MovieLens layouts (ML-10M, ML-20M, ML-25M; no demographics, no
# enrichment). `data/generate.py` writes them; the official zips extract to
# the same folders.


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a MovieLens release keeps its files and how they are written."""
  folder: str
  movies: str
  ratings: str
  csv: bool


LAYOUTS = {
    "ml-10m": Layout("ml-10M100K", "movies.dat", "ratings.dat", csv=False),
    "ml-20m": Layout("ml-20m", "movies.csv", "ratings.csv", csv=True),
    "ml-25m": Layout("ml-25m", "movies.csv", "ratings.csv", csv=True),
}
# The TFDS movielens genre labels of these releases (IMAX and "(no genres
# listed)" are not in ML-1M).
LARGE_GENRES = GENRES + ("IMAX", "(no genres listed)")
_MOVIES_HEADER = "movieId,title,genres"
_RATINGS_HEADER = "userId,movieId,rating,timestamp"
_STARS = re.compile(r"[0-5](\.[05])?")


def _csv_fields(line: str) -> Optional[List[str]]:
  """The fields of one csv line (RFC 4180 quoting: `"a, b"`, `""` inside
  quotes); None if a quote is not closed or text follows a closing quote."""
  fields, i, n = [], 0, len(line)
  while True:
    if i < n and line[i] == '"':
      value, i = [], i + 1
      while True:
        j = line.find('"', i)
        if j < 0:
          return None
        value.append(line[i:j])
        if j + 1 < n and line[j + 1] == '"':
          value.append('"')
          i = j + 2
          continue
        i = j + 1
        break
      fields.append("".join(value))
      if i < n and line[i] != ",":
        return None
    else:
      j = line.find(",", i)
      j = n if j < 0 else j
      if '"' in line[i:j]:
        return None
      fields.append(line[i:j])
      i = j
    if i >= n:
      return fields
    i += 1  # the comma
    if i == n:
      fields.append("")
      return fields


def _layout_lines(raw_bytes: bytes, layout: Layout, check: _LineChecker,
                  filename: str, header: str, count: int
                  ) -> Iterator[Tuple[int, List[str]]]:
  """(line number, fields) of a layout file's data lines (UTF-8); csv
  files must start with `header`."""
  first = True
  for line_no, line in _split_lines(raw_bytes, "utf-8", check, filename):
    if layout.csv and first:
      first = False
      if line != header:
        raise BadInputError(f"{filename}:{line_no}: expected the header "
                            f"{header!r}, got {_show(line)}")
      continue
    fields = _csv_fields(line) if layout.csv else _fields(line)
    sep = "','" if layout.csv else "'::'"
    if fields is None:
      check.bad(filename, line_no, f"unbalanced double quote: {_show(line)}")
    elif len(fields) != count:
      check.bad(filename, line_no, f"expected {count} {sep}-separated "
                f"fields, got {len(fields)}: {_show(line)}")
    else:
      yield line_no, fields


def parse_layout_movies(raw_bytes: bytes, layout: Layout, check: _LineChecker
                        ) -> pd.DataFrame:
  """movies.dat / movies.csv: `movieId, title, genres` (`|`-joined,
  `(no genres listed)` kept as a genre, as TFDS does)."""
  rows, seen, filename = [], set(), layout.movies
  for line_no, (movie_id, title, genres) in _layout_lines(
      raw_bytes, layout, check, filename, _MOVIES_HEADER, 3):
    genre_list = [g for g in genres.split("|") if g]
    unknown = [g for g in genre_list if g not in LARGE_GENRES]
    problem = None
    if not _is_int(movie_id):
      problem = f"movie id {_show(movie_id)} is not a positive integer"
    elif movie_id in seen:
      problem = f"duplicate movie id {movie_id}"
    elif not title.strip():
      problem = "empty title"
    elif not genre_list:
      problem = "no genres"
    elif unknown:
      problem = f"unknown genre(s) {', '.join(map(_show, unknown[:5]))}"
    if problem:
      check.bad(filename, line_no, problem)
      continue
    seen.add(movie_id)
    year = _TITLE_YEAR.search(title)
    rows.append({"movie_id": movie_id,
                 "movie_title": " ".join(title.split()),
                 "movie_genres": genre_list,
                 "release_year": int(year.group(1)) if year else 0})
  return pd.DataFrame(rows, columns=[
      "movie_id", "movie_title", "movie_genres", "release_year"])


def parse_layout_ratings(raw_bytes: bytes, layout: Layout,
                         check: _LineChecker, movie_ids: set
                         ) -> pd.DataFrame:
  """ratings.dat / ratings.csv: `userId, movieId, rating, timestamp`,
  rating 0.5-5 in half stars."""
  users, movies, ratings, stamps = [], [], [], []
  seen, filename = set(), layout.ratings
  for line_no, (user_id, movie_id, rating, stamp) in _layout_lines(
      raw_bytes, layout, check, filename, _RATINGS_HEADER, 4):
    problem = None
    if not _is_int(user_id):
      problem = f"user id {_show(user_id)} is not a positive integer"
    elif not _STARS.fullmatch(rating) or not 0.5 <= float(rating) <= 5.0:
      problem = f"rating {_show(rating)} is not 0.5-5 in half stars"
    elif not _is_int(stamp):
      problem = (f"timestamp {_show(stamp)} is not a non-negative integer "
                 "(at most 18 digits)")
    elif movie_id not in movie_ids:
      problem = (f"rating of unknown movie {_show(movie_id)} (not in "
                 f"{layout.movies})")
    elif (user_id, movie_id) in seen:
      problem = f"duplicate rating of movie {movie_id} by user {user_id}"
    if problem:
      check.bad(filename, line_no, problem)
      continue
    seen.add((user_id, movie_id))
    users.append(user_id)
    movies.append(movie_id)
    ratings.append(float(rating))
    stamps.append(int(stamp))
  return pd.DataFrame({
      "user_id": pd.Series(users, dtype=object),
      "movie_id": pd.Series(movies, dtype=object),
      "user_rating": pd.Series(ratings, dtype="float32"),
      "timestamp": pd.Series(stamps, dtype="int64"),
  })


def load_layout(raw_dir: str, layout: str, on_bad_line: str = "error"
                ) -> RawData:
  """Reads `RAW/<folder>/` of a larger release (`LAYOUTS`). The users
  table has only `user_id` (these releases have no demographics), the
  movies no director or star (no enrichment)."""
  if layout not in LAYOUTS:
    raise errors.ConfigError(f"layout must be one of {tuple(LAYOUTS)}, not "
                             f"{layout!r}")
  spec = LAYOUTS[layout]
  folder = os.path.join(raw_dir, spec.folder)
  files = {}
  for name in (spec.movies, spec.ratings):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      raise MissingDataError(f"missing {path} (the {layout} layout: "
                             f"{spec.folder}/{spec.movies} and "
                             f"{spec.ratings})")
    with open(path, "rb") as f:
      files[name] = f.read()
  report = ParseReport()
  check = _LineChecker(on_bad_line, report)
  movies = parse_layout_movies(files[spec.movies], spec, check)
  _require_rows(len(movies), spec.movies, "movies", report)
  ratings = parse_layout_ratings(files[spec.ratings], spec, check,
                                 set(movies.movie_id))
  _require_rows(len(ratings), spec.ratings, "ratings", report)
  users = pd.DataFrame({"user_id": pd.Series(
      sorted(set(ratings.user_id), key=int), dtype=object)})
  return RawData(users=users, movies=movies, ratings=ratings, report=report,
                 source=os.path.abspath(folder))
