"""Hostile-input corpus for the raw readers, and fuzzing them.

Copies of a small generated raw dataset (`fakedata`) are corrupted one
way each. Every case asserts the exact one-line error (file, true line
number, problem) and, with `on_bad_line="skip"`, the exact skip counts;
some are accepted on purpose (CRLF, a UTF-8 byte-order mark, NEL or form
feed inside a title, blank lines). A few run the real CLI for its exit
status. The fuzz tests make random byte edits to valid small files and
check that the readers raise nothing but `InputError`, name a line that
was really edited, and keep exactly the rows of the untouched lines.
"""

import codecs
import difflib
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

import fakedata
from data import raw
from tfrs_pipeline import errors

HINT = " (rerun with --on_bad_line=skip to skip and count such lines)"
FILES = {
    "users.dat": "ml-1m/users.dat",
    "movies.dat": "ml-1m/movies.dat",
    "ratings.dat": "ml-1m/ratings.dat",
    "movies_extrainfos.dat": "melu/movies_extrainfos.dat",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
  facts = fakedata.write_raw_dir(str(tmp_path_factory.mktemp("clean")))
  facts["data"] = raw.load_raw(facts["path"])
  return facts


@pytest.fixture
def root(clean, tmp_path):
  """A fresh copy of the clean raw directory, to corrupt."""
  path = str(tmp_path / "raw")
  shutil.copytree(clean["path"], path)
  return path


def _read(root, name):
  with open(os.path.join(root, FILES[name]), "rb") as f:
    return f.read()


def _write(root, name, data):
  with open(os.path.join(root, FILES[name]), "wb") as f:
    f.write(data)


def _edit_line(root, name, line_no, transform):
  """Replaces line `line_no` (1-based) with transform(line, lines)."""
  lines = _read(root, name).split(b"\n")
  lines[line_no - 1] = transform(lines[line_no - 1], lines)
  _write(root, name, b"\n".join(lines))
  return lines[line_no - 1]


def _field(i, value):
  def transform(line, _):
    parts = line.split(b"::")
    parts[i] = value
    return b"::".join(parts)
  return transform


def _copy_of(line_no):
  return lambda _, lines: lines[line_no - 1]


def _ratings_of(clean, column, value):
  return int((clean["data"].ratings[column] == value).sum())


def _skips(clean, name, key):
  """Skip counts when the line of user or movie `key` in `name` is bad:
  that line, and in ratings.dat the ratings of a user or movie lost."""
  column = {"users.dat": "user_id", "movies.dat": "movie_id"}.get(name)
  lost = _ratings_of(clean, column, key) if column else 0
  return {name: 1, "ratings.dat": lost} if lost else {name: 1}


def _load_error(root, mode="error"):
  with pytest.raises(raw.BadInputError) as e:
    raw.load_raw(root, on_bad_line=mode)
  assert "\n" not in str(e.value)
  return str(e.value)


def _same_tables(a, b):
  return (a.users.equals(b.users) and a.movies.equals(b.movies)
          and a.ratings.equals(b.ratings))


# One corrupted line each: (file, line, transform, problem). The problem
# may name the edited line ({line!r}) or its fields ({f[0]}). A bad user
# also drops that user's ratings in skip mode, a bad movie its ratings.
LINE_CASES = {
    "rating-non-numeric": ("ratings.dat", 5, _field(2, b"four"),
                           "rating 'four' is outside 1-5"),
    "rating-0": ("ratings.dat", 6, _field(2, b"0"),
                 "rating '0' is outside 1-5"),
    "rating-7": ("ratings.dat", 7, _field(2, b"7"),
                 "rating '7' is outside 1-5"),
    "rating-superscript-2": ("ratings.dat", 8, _field(2, b"\xb2"),
                             "rating '\xb2' is outside 1-5"),
    "rating-nel-after-digit": ("ratings.dat", 9, _field(2, b"4\x85"),
                               "rating '4\\x85' is outside 1-5"),
    "timestamp-non-numeric": (
        "ratings.dat", 10, _field(3, b"97830x"),
        "timestamp '97830x' is not a non-negative integer (at most 18 "
        "digits)"),
    "timestamp-30-digits": (
        "ratings.dat", 11, _field(3, b"9" * 30),
        f"timestamp '{'9' * 30}' is not a non-negative integer (at most 18 "
        "digits)"),
    "unknown-user": ("ratings.dat", 12, _field(0, b"99999"),
                     "rating of unknown user '99999' (not in users.dat)"),
    "unknown-movie": ("ratings.dat", 13, _field(1, b"99999"),
                      "rating of unknown movie '99999' (not in movies.dat)"),
    "cr-inside-line": ("ratings.dat", 14,
                       lambda b, _: b.replace(b"::", b"\r::", 1),
                       "rating of unknown user {f[0]!r} (not in users.dat)"),
    "rating-extra-field": ("ratings.dat", 15, lambda b, _: b + b"::1",
                           "expected 4 '::'-separated fields, got 5: "
                           "{line!r}"),
    "rating-missing-field": ("ratings.dat", 16,
                             lambda b, _: b.rsplit(b"::", 1)[0],
                             "expected 4 '::'-separated fields, got 3: "
                             "{line!r}"),
    "rating-nul-byte": ("ratings.dat", 17, lambda b, _: b[:2] + b"\0" + b[2:],
                        "NUL byte at column 3 (file corrupted?)"),
    "rating-duplicate": ("ratings.dat", 19, _copy_of(18),
                         "duplicate rating of movie {f[1]} by user {f[0]}"),
    "form-feed-line": ("ratings.dat", 20, lambda b, _: b"\x0c",
                       "expected 4 '::'-separated fields, got 1: '\\x0c'"),
    "user-id-non-numeric": ("users.dat", 3, _field(0, b"x3"),
                            "user id 'x3' is not a positive integer"),
    "age-unknown": ("users.dat", 4, _field(2, b"26"),
                    "age '26' is not one of the ML-1M buckets "
                    "(1, 18, 25, 35, 45, 50, 56)"),
    "age-superscript-2": ("users.dat", 5, _field(2, b"2\xb2"),
                          "age '2\xb2' is not one of the ML-1M buckets "
                          "(1, 18, 25, 35, 45, 50, 56)"),
    "gender-unknown": ("users.dat", 6, _field(1, b"X"),
                       "gender 'X' is not M or F"),
    "occupation-21": ("users.dat", 7, _field(3, b"21"),
                      "occupation '21' is not in 0..20"),
    "user-missing-field": ("users.dat", 8,
                           lambda b, _: b.rsplit(b"::", 1)[0],
                           "expected 5 '::'-separated fields, got 4: "
                           "{line!r}"),
    "user-duplicate": ("users.dat", 9, _copy_of(1), "duplicate user id 1"),
    "user-nul-byte": ("users.dat", 10, lambda b, _: b + b"\0",
                      "NUL byte at column {len} (file corrupted?)"),
    "genre-unknown": ("movies.dat", 5, _field(2, b"Drama|Cartoon"),
                      "unknown genre(s) 'Cartoon'"),
    "movie-id-non-numeric": ("movies.dat", 6, _field(0, b"6a"),
                             "movie id '6a' is not a positive integer"),
    "no-genres": ("movies.dat", 7, _field(2, b""), "no genres"),
    "empty-title": ("movies.dat", 8, _field(1, b" "), "empty title"),
    "movie-extra-field": ("movies.dat", 9, lambda b, _: b + b"::x",
                          "expected 3 '::'-separated fields, got 4: "
                          "{line!r}"),
    "movie-duplicate": ("movies.dat", 10, _copy_of(2),
                        "duplicate movie id 2"),
    "melu-bytes-ff-fe": ("movies_extrainfos.dat", 2,
                         lambda b, _: b"\xff\xfe" + b,
                         "not valid utf-8 text (byte 0xff at column 1)"),
    "melu-few-fields": ("movies_extrainfos.dat", 3,
                        lambda b, _: b.split(b"::")[0] + b"::x\r",
                        "expected 11 '::'-separated fields, got 2"),
    "melu-superscript-id": ("movies_extrainfos.dat", 4,
                            _field(0, "\xb2".encode()),
                            "movie id '\xb2' is not a positive integer"),
    "melu-duplicate": ("movies_extrainfos.dat", 5, _copy_of(1),
                       "duplicate movie id 1"),
}


@pytest.mark.parametrize("case", sorted(LINE_CASES))
def test_bad_line_names_file_line_and_problem(clean, root, case):
  name, line_no, transform, problem = LINE_CASES[case]
  original = _read(root, name).split(b"\n")[line_no - 1]
  edited = _edit_line(root, name, line_no, transform)
  text = edited.decode("utf-8" if name.startswith("movies_extra")
                       else "latin-1", "replace").removesuffix("\r")
  problem = problem.format(line=text, f=text.split("::"), len=len(edited))
  assert _load_error(root) == f"{name}:{line_no}: {problem}{HINT}"

  data = raw.load_raw(root, on_bad_line="skip")
  first = original.split(b"::")[0].decode()
  expected = _skips(clean, name, first)
  assert dict(data.report.skipped) == expected
  assert data.report.examples[0] == f"{name}:{line_no}: {problem}"
  assert len(data.ratings) == clean["num_ratings"] - expected.get(
      "ratings.dat", 0)
  assert len(data.users) == clean["num_users"] - (name == "users.dat")
  assert len(data.movies) == clean["num_movies"] - (name == "movies.dat")
  if name == "movies_extrainfos.dat":
    # The movie whose line it was keeps its ratings; its director and star
    # become unknown.
    movie = data.movies.set_index("movie_id").loc[first]
    assert (movie.director, movie.star) == (raw.UNKNOWN, raw.UNKNOWN)


@pytest.mark.parametrize("name", sorted(FILES))
def test_truncated_last_line(clean, root, name):
  data = _read(root, name)
  lines = data.count(b"\n")
  # Cut mid-number: the last line's final digits and its newline are gone.
  cut = data.rstrip(b"\r\n")[:-2]
  _write(root, name, cut)
  assert _load_error(root) == (
      f"{name}:{lines}: last line has no newline (file truncated?){HINT}")
  skipped = raw.load_raw(root, on_bad_line="skip")
  last = cut.rsplit(b"\n", 1)[1].split(b"::")[0].decode()
  assert dict(skipped.report.skipped) == _skips(clean, name, last)


def test_truncated_last_line_never_gives_a_short_timestamp(clean, root):
  data = _read(root, "ratings.dat")
  _write(root, "ratings.dat", data[:-3])  # "...::9783007" without "\n"
  skipped = raw.load_raw(root, on_bad_line="skip")
  assert len(skipped.ratings) == clean["num_ratings"] - 1
  assert skipped.ratings.equals(clean["data"].ratings.iloc[:-1])


@pytest.mark.parametrize("name,what", [
    ("users.dat", "users"), ("movies.dat", "movies"),
    ("ratings.dat", "ratings"), ("movies_extrainfos.dat", "movies")])
@pytest.mark.parametrize("content", [b"", b"\n\n \t\r\n"])
def test_empty_file(root, name, what, content):
  _write(root, name, content)
  for mode in raw.ON_BAD_LINE_CHOICES:
    assert _load_error(root, mode) == f"{name}: no {what} (the file is empty)"


def test_no_valid_line_left(clean, root):
  lines = _read(root, "ratings.dat").split(b"\n")
  _write(root, "ratings.dat", b"\n".join(
      _field(2, b"9")(line, None) if line else line for line in lines))
  assert _load_error(root) == f"ratings.dat:1: rating '9' is outside 1-5{HINT}"
  assert _load_error(root, "skip") == (
      f"ratings.dat: no ratings (all {clean['num_ratings']} lines are bad "
      "and were skipped)")


@pytest.mark.parametrize("name", sorted(FILES))
def test_missing_file(root, name):
  os.remove(os.path.join(root, FILES[name]))
  with pytest.raises(raw.MissingDataError) as e:
    raw.load_raw(root)
  path = os.path.join(root, FILES[name])
  if name.startswith("movies_extra"):
    expected = f"missing enrichment file {path}. "
  else:
    others = ", ".join(n for n in ("users.dat", "movies.dat", "ratings.dat")
                       if n != name)
    expected = f"missing {path} (the folder has {others}). "
  assert str(e.value) == expected + raw.HOW_TO_SUPPLY


def test_crlf_line_endings_are_accepted(clean, root):
  for name in ("users.dat", "movies.dat", "ratings.dat"):
    _write(root, name, _read(root, name).replace(b"\n", b"\r\n"))
  # The enrichment file is CRLF already; as LF it reads the same.
  name = "movies_extrainfos.dat"
  _write(root, name, _read(root, name).replace(b"\r\n", b"\n"))
  data = raw.load_raw(root)
  assert data.report.skipped_total == 0
  assert _same_tables(data, clean["data"])


def test_utf8_byte_order_mark_is_accepted(clean, root):
  # An editor that saves a latin-1 file as UTF-8 with a BOM: the BOM says
  # the file is UTF-8 now, so its titles still read right.
  for name in ("users.dat", "movies.dat", "ratings.dat"):
    text = _read(root, name).decode("latin-1")
    _write(root, name, codecs.BOM_UTF8 + text.encode("utf-8"))
  name = "movies_extrainfos.dat"
  _write(root, name, codecs.BOM_UTF8 + _read(root, name))
  data = raw.load_raw(root)
  assert data.report.skipped_total == 0
  assert _same_tables(data, clean["data"])
  assert data.movies.movie_title[0] == "Café Society, The (1995)"


def test_byte_order_mark_on_latin1_bytes_is_a_bad_line(clean, root):
  _write(root, "movies.dat", codecs.BOM_UTF8 + _read(root, "movies.dat"))
  # Line 1 is "1::Café ...": the latin-1 0xe9 is byte 10 with the BOM.
  assert _load_error(root) == (
      "movies.dat:1: not valid utf-8 text (byte 0xe9 at column 10; the file "
      f"starts with a UTF-8 byte-order mark){HINT}")
  skipped = raw.load_raw(root, on_bad_line="skip")
  assert dict(skipped.report.skipped) == {
      "movies.dat": 1, "ratings.dat": _ratings_of(clean, "movie_id", "1")}


def test_nel_and_form_feed_in_a_title_are_no_line_breaks(clean, root):
  _edit_line(root, "movies.dat", 2,
             lambda b, _: b.replace(b"Toy Story", b"Toy\x85Story\x0c"))
  data = raw.load_raw(root)
  assert _same_tables(data, clean["data"])  # whitespace in titles is one " "
  # A bad line after it is named by its true number.
  _edit_line(root, "movies.dat", 30, _field(2, b"Cartoon"))
  assert _load_error(root) == f"movies.dat:30: unknown genre(s) 'Cartoon'{HINT}"


def test_blank_lines_are_skipped_without_shifting_line_numbers(clean, root):
  lines = _read(root, "ratings.dat").split(b"\n")
  lines[3:3] = [b"", b" \t\r"]  # now lines 4 and 5
  lines[9] = _field(2, b"0")(lines[9], None)
  _write(root, "ratings.dat", b"\n".join(lines))
  assert _load_error(root) == f"ratings.dat:10: rating '0' is outside 1-5{HINT}"
  skipped = raw.load_raw(root, on_bad_line="skip")
  assert dict(skipped.report.skipped) == {"ratings.dat": 1}


# --- The real CLI: exit status and the one line it prints. -------------


def _cli():
  script = os.path.join(os.path.dirname(sys.executable), "tfrs-pipeline")
  if os.path.isfile(script):
    return [script]
  return [sys.executable, "-m", "tfrs_pipeline.app.cli"]


def _prepare(root, tmp_path, *flags):
  """Exit status and stderr lines of `tfrs-pipeline data prepare`."""
  out = subprocess.run(
      _cli() + ["data", "prepare", f"--raw_data={root}",
                f"--data_dir={tmp_path / 'tfds'}", *flags],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
  assert "Traceback" not in out.stderr + out.stdout
  assert "Downloading and preparing" not in out.stdout or out.returncode == 0
  return out.returncode, out.stderr.strip().splitlines()


def test_cli_bad_line_exits_3(root, tmp_path):
  _edit_line(root, "ratings.dat", 6, _field(2, b"0"))
  code, err = _prepare(root, tmp_path, "--configs=movies")
  assert code == errors.InputError.exit_code == 3
  assert err[-1] == f"error: ratings.dat:6: rating '0' is outside 1-5{HINT}"


def test_cli_empty_ratings_exits_3_before_building(root, tmp_path):
  _write(root, "ratings.dat", b"")
  # The movies table needs no rating, but an empty ratings.dat means a
  # broken download: every config refuses it.
  code, err = _prepare(root, tmp_path, "--configs=movies")
  assert code == 3
  assert err[-1] == "error: ratings.dat: no ratings (the file is empty)"
  built = tmp_path / "tfds" / "movielens_enriched" / "movies" / "1.0.0"
  assert not (built / "dataset_info.json").exists()


def test_cli_missing_file_exits_4(root, tmp_path):
  os.remove(os.path.join(root, FILES["users.dat"]))
  code, err = _prepare(root, tmp_path, "--configs=movies")
  assert code == errors.MissingError.exit_code == 4
  assert err[-1].startswith(
      f"error: missing {os.path.join(root, FILES['users.dat'])} (the folder "
      "has movies.dat, ratings.dat).")


def test_cli_skip_mode_counts(clean, root, tmp_path):
  _edit_line(root, "ratings.dat", 12, _field(0, b"99999"))
  _write(root, "ratings.dat", _read(root, "ratings.dat")[:-3])
  code, err = _prepare(root, tmp_path, "--configs=movies",
                       "--on_bad_line=skip")
  assert code == 0
  assert "[data] skipped 2 bad lines: {'ratings.dat': 2}" in err
  assert err[-1] == (
      f"[data] ready: {clean['num_ratings'] - 2:,} ratings, "
      f"{clean['num_users']:,} users, {clean['num_movies']:,} movies; "
      "skipped lines: 2")


# --- Fuzzing: random byte edits of valid small files. ------------------

EDIT_BYTES = [b"\n", b"\r", b"\x00", b"\x85", b"\x0c", b"\xff", b"\xb2",
              b"\xc3", b":", b"::", b"|", b" ", b"a"] + [
                  bytes([d]) for d in b"0123456789"]
EDITS = st.lists(st.tuples(st.sampled_from(("insert", "delete", "replace")),
                           st.integers(0, 1 << 16),
                           st.sampled_from(EDIT_BYTES)),
                 min_size=1, max_size=4)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                database=None)
_NUMBER = r"[ \t]*([0-9]{1,18})[ \t]*"
_NUMBERS = re.compile("::".join([_NUMBER] * 4))


@functools.lru_cache(maxsize=None)
def _small_files():
  """The bytes of a small valid raw dataset and its parsed id sets."""
  with tempfile.TemporaryDirectory() as path:
    fakedata.write_raw_dir(path, num_users=8, num_movies=9,
                           ratings_per_user=4, num_users_without_ratings=1)
    files = {name: _read(path, name) for name in FILES}
    data = raw.load_raw(path)
  return files, (set(data.users.user_id), set(data.movies.movie_id))


def _parse(name, content, mode):
  """(rows in line order, skip messages) of one file read alone."""
  report = raw.ParseReport()
  check = raw._LineChecker(mode, report)  # pylint: disable=protected-access
  if name == "ratings.dat":
    users, movies = _small_files()[1]
    rows = raw.parse_ratings(content, check, users, movies)
  elif name == "movies_extrainfos.dat":
    return list(raw.parse_enrichment(content, check).items()), report.examples
  else:
    rows = getattr(raw, f"parse_{name[:-4]}")(content, check)
  return list(rows.itertuples(index=False, name=None)), report.examples


def _apply(content, edits):
  for op, at, byte in edits:
    at %= len(content) + (op == "insert")
    skip = 0 if op == "insert" else 1
    content = content[:at] + (b"" if op == "delete" else byte) + content[
        at + skip:]
  return content


def _lines(content):
  """Each line with its newline (the last one may lack it)."""
  return [line + b"\n" for line in content.split(b"\n")[:-1]] + [
      content.split(b"\n")[-1]]


def _nonblank(content):
  return [i for i, line in enumerate(_lines(content), start=1)
          if line.strip(b" \t\r\n")]


def _check_edited(name, edits):
  original = _small_files()[0][name]
  content = _apply(original, edits)
  old_rows, old_skips = _parse(name, original, "skip")
  assert not old_skips
  old_row_of = dict(zip(_nonblank(original), old_rows))
  # Unchanged lines: edited line number -> original line number.
  matcher = difflib.SequenceMatcher(None, _lines(original), _lines(content),
                                    autojunk=False)
  unchanged = {}
  for tag, i1, _, j1, j2 in matcher.get_opcodes():
    if tag == "equal":
      unchanged.update((j + 1, i1 + j - j1 + 1) for j in range(j1, j2))
  changed = [j for j in _nonblank(content) if j not in unchanged]

  rows, skips = _parse(name, content, "skip")
  skipped = [int(m.split(":")[1]) for m in skips]
  assert all(m.startswith(f"{name}:") and "\n" not in m for m in skips)
  # Nothing dropped silently: each non-blank line is a row or a skip.
  kept = [j for j in _nonblank(content) if j not in skipped]
  assert len(kept) == len(rows) and set(skipped) <= set(_nonblank(content))
  for j in skipped:
    # A skip names an edited line, or an untouched line that an edited
    # line before it made a duplicate.
    assert j not in unchanged or ("duplicate" in skips[skipped.index(j)]
                                  and any(c < j for c in changed)), skips
  for j, row in zip(kept, rows):
    if j in unchanged:
      assert row == old_row_of[unchanged[j]]
    elif name == "ratings.dat":
      # An edited line that is kept really is four ASCII numbers.
      text = _lines(content)[j - 1].decode("latin-1").rstrip("\n")
      numbers = _NUMBERS.fullmatch(text.removesuffix("\r"))
      assert numbers, text
      user, movie, rating, stamp = numbers.groups()
      users, movies = _small_files()[1]
      assert user in users and movie in movies and 1 <= int(rating) <= 5
      assert row == (user, movie, float(rating), int(stamp))
    else:
      # Its id is the line's first field exactly (no character but a
      # space or tab is trimmed), and ASCII digits.
      text = _lines(content)[j - 1].decode("latin-1")
      assert text.split("::")[0].strip(" \t") == row[0]
      assert re.fullmatch(r"[0-9]{1,18}", row[0])
  # Error mode stops at the first of those lines with the same message.
  if skips:
    with pytest.raises(errors.InputError) as e:
      _parse(name, content, "error")
    assert str(e.value) == skips[0] + HINT
  else:
    assert _parse(name, content, "error")[0] == rows


@pytest.mark.parametrize("name", sorted(FILES))
@FUZZ
@given(edits=EDITS)
def test_fuzzed_files_give_input_errors_on_edited_lines_only(name, edits):
  _check_edited(name, edits)
