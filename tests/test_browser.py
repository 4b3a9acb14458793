"""Drives the web page in headless Chromium (selenium) against a real
server; skips when Chromium / chromedriver are missing.

The screenshots go to the pytest tmp dir (path printed; `-s` shows it).
"""

import os
import shutil
import tempfile

import pytest

from test_recommend import small_runs  # noqa: F401  pylint: disable=unused-import
from test_serving import server  # noqa: F401  pylint: disable=unused-import
from tfrs_pipeline.app import recommender

_CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
_DRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
  webdriver = pytest.importorskip("selenium.webdriver")
  binary = next((b for b in _CHROMIUM if os.path.exists(b)), None)
  driver_path = _DRIVER if os.path.exists(_DRIVER) else shutil.which(
      "chromedriver")
  if not binary or not driver_path:
    pytest.skip("no chromium/chromedriver (apt-get install chromium "
                "chromium-driver, or `make install` as root)")
  profile = tempfile.mkdtemp(prefix="chromium-profile-")
  options = webdriver.ChromeOptions()
  options.binary_location = binary
  for arg in ("--headless", "--no-sandbox", "--disable-gpu",
              "--disable-quic", "--no-first-run",
              "--disable-background-networking",
              "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1400,900",
              f"--user-data-dir={profile}"):
    options.add_argument(arg)
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  try:
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f"chromium did not start: {str(e)[:200]}")
  driver.set_page_load_timeout(30)
  yield driver
  driver.quit()
  shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, timeout=30):
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  return WebDriverWait(driver, timeout).until(condition)


def _rows(driver, table):
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  return driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")


def test_page(browser, server, tmp_path):  # pylint: disable=redefined-outer-name
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  browser.get(server["url"] + "/")
  _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body")
        .get_attribute("data-ready") == "1")
  assert browser.find_element(By.ID, "status").text == "ready"
  examples = browser.find_elements(By.CSS_SELECTOR, "#examples button")
  assert examples, "example user ids shown"

  # Known user: type an id, submit.
  box = browser.find_element(By.ID, "user-id")
  box.clear()
  box.send_keys("7")
  browser.find_element(By.ID, "user-submit").click()
  _wait(browser, lambda d: len(_rows(d, "recs")) > 0
        and len(_rows(d, "ratings")) > 0)
  recs = _rows(browser, "recs")
  assert len(recs) == 10
  cells = recs[0].find_elements(By.TAG_NAME, "td")
  assert len(cells) == 8 and cells[1].text  # title
  headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR,
                                                   "#recs th")]
  assert "Director" in headers and "Star" in headers and "Why" in headers
  directors = [r.find_element(By.CSS_SELECTOR, "td.director").text
               for r in recs]
  stars = [r.find_element(By.CSS_SELECTOR, "td.star").text for r in recs]
  assert any(d not in ("", "\u2014") for d in directors + stars)
  assert "user 7" in browser.find_element(By.ID, "ratings-title").text
  ratings = _rows(browser, "ratings")
  assert 1 <= len(ratings) <= 10
  assert "\u2605" in ratings[0].find_element(By.CSS_SELECTOR,
                                             "td.stars").text
  shot = tmp_path / "page_user.png"
  browser.save_screenshot(str(shot))
  assert shot.stat().st_size > 10_000
  print(f"screenshot: {shot}")

  # Unknown user: the error box, no crash.
  box.clear()
  box.send_keys("424242")
  browser.find_element(By.ID, "user-submit").click()
  _wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed())
  assert "unknown user id" in browser.find_element(By.ID, "error").text

  # New user from demographics (the fields start empty).
  from selenium.webdriver.support.ui import Select  # pylint: disable=g-import-not-at-top
  assert browser.find_element(By.ID, "age").get_attribute("value") == ""
  browser.find_element(By.ID, "age").send_keys("30")
  Select(browser.find_element(By.ID, "gender")).select_by_value("F")
  Select(browser.find_element(By.ID, "occupation")).select_by_value("writer")
  browser.find_element(By.ID, "zip").send_keys("94110")
  browser.find_element(By.ID, "new-user-submit").click()
  _wait(browser, lambda d: "new user" in d.find_element(
      By.ID, "recs-title").text)
  # Age 30 is the 25-34 bucket, shown as that range.
  assert "(F 25-34 writer)" in browser.find_element(By.ID,
                                                    "recs-title").text
  assert len(_rows(browser, "recs")) == 10
  assert not browser.find_element(By.ID, "error").is_displayed()
  assert _rows(browser, "ratings") == []
  browser.save_screenshot(str(tmp_path / "page_new_user.png"))

  # New user who likes movies: search a fragment of a recommended title,
  # pick it; the table refreshes without it.
  def updates():
    return int(browser.find_element(By.ID, "recs").get_attribute(
        "data-updates") or 0)

  def rec_ids():
    return [r.get_attribute("data-movie-id") for r in _rows(browser, "recs")]

  def pick(movie_id, fragment, shot=None):
    search = browser.find_element(By.ID, "movie-search")
    search.clear()
    search.send_keys(fragment)
    selector = f'#movie-results button[data-movie-id="{movie_id}"]'
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, selector))
    if shot:
      browser.save_screenshot(str(tmp_path / shot))
    before = updates()
    browser.find_element(By.CSS_SELECTOR, selector).click()
    _wait(browser, lambda d: updates() > before)

  first = _rows(browser, "recs")[0]
  movie_id = first.get_attribute("data-movie-id")
  title = first.find_element(By.CSS_SELECTOR, "td.title").text
  before_ids = rec_ids()
  pick(movie_id, title[1:].upper())  # case-insensitive substring
  assert not browser.find_element(By.ID, "error").is_displayed()
  liked = browser.find_elements(By.CSS_SELECTOR, "#liked li")
  assert [li.get_attribute("data-movie-id") for li in liked] == [movie_id]
  assert title in liked[0].text
  assert "1 movie you like" in browser.find_element(By.ID,
                                                    "recs-title").text
  ids = rec_ids()
  assert len(ids) == 10 and movie_id not in ids and ids != before_ids
  whys = [r.find_element(By.CSS_SELECTOR, "td.why").text
          for r in _rows(browser, "recs")]
  assert all(w and w != "\u2014" for w in whys), whys
  # The liked movie that brought it, else its sources (popularity names
  # the demographics entered above).
  labels = (set(recommender.SOURCE_LABELS.values()) - {"popular"}
            | {"popular with F 25-34 writer"})
  assert all(w.startswith("because you liked ") or set(w.split(", ")) <= labels
             for w in whys), whys
  assert any(w.startswith("because you liked ") for w in whys), whys
  # The right-hand table lists the movies the visitor likes.
  assert "Movies you like" in browser.find_element(By.ID,
                                                   "ratings-title").text
  assert title in _rows(browser, "ratings")[0].text

  # A second movie, found by typing only lower case: Toy Story (id 2),
  # or the next recommended movie when that is the one already picked.
  second = "2" if movie_id != "2" else ids[0]
  second_title = "Toy Story" if second == "2" else _rows(browser, "recs")[
      0].find_element(By.CSS_SELECTOR, "td.title").text
  pick(second, second_title.lower()[:6], "page_search.png")
  liked_ids = [li.get_attribute("data-movie-id") for li in
               browser.find_elements(By.CSS_SELECTOR, "#liked li")]
  assert liked_ids == [second, movie_id]
  assert "2 movies you like" in browser.find_element(By.ID,
                                                     "recs-title").text
  assert not {movie_id, second} & set(rec_ids())
  # Rating control and partial demographics: the error box names the
  # missing field.
  browser.find_element(By.ID, "zip").clear()
  before = updates()
  Select(browser.find_element(By.CSS_SELECTOR, "#liked li select")
         ).select_by_value("3")
  _wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed())
  assert "missing: zip" in browser.find_element(By.ID, "error").text
  browser.find_element(By.ID, "zip").send_keys("94110")
  browser.find_element(By.ID, "new-user-submit").click()
  _wait(browser, lambda d: updates() > before)
  assert not browser.find_element(By.ID, "error").is_displayed()
  assert not {movie_id, second} & set(rec_ids())
  shot = tmp_path / "page_ratings.png"
  browser.save_screenshot(str(shot))
  assert shot.stat().st_size > 10_000
  print(f"screenshot: {shot}")

  # Remove the first pick: it may be recommended again, the other not.
  before = updates()
  remove = [li for li in browser.find_elements(By.CSS_SELECTOR, "#liked li")
            if li.get_attribute("data-movie-id") == movie_id][0]
  remove.find_element(By.CSS_SELECTOR, "button.remove").click()
  _wait(browser, lambda d: updates() > before)
  assert [li.get_attribute("data-movie-id") for li in
          browser.find_elements(By.CSS_SELECTOR, "#liked li")] == [second]
  assert second not in rec_ids()
  assert "1 movie you like" in browser.find_element(By.ID,
                                                    "recs-title").text
