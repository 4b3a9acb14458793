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
  assert len(cells) == 9 and cells[1].text  # title
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


# --------------------------------------------------------------------------
# One test per page behaviour (issue 14). Each loads the page afresh.


def _load(driver, url):
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  driver.get(url)
  _wait(driver, lambda d: d.find_element(By.TAG_NAME, "body")
        .get_attribute("data-ready") == "1")


def _text(driver, element_id):
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  return driver.find_element(By.ID, element_id).text


def _shown(driver, element_id):
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  return driver.find_element(By.ID, element_id).is_displayed()


def _query(driver):
  """The address bar's query parameters."""
  import urllib.parse  # pylint: disable=g-import-not-at-top
  return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(
      driver.current_url).query))


def _ids(driver):
  return [r.get_attribute("data-movie-id") for r in _rows(driver, "recs")]


_RECTS = """return arguments[0].map((s) => {
  const r = document.querySelector(s).getBoundingClientRect();
  return [s, Math.round(r.left), Math.round(r.top), Math.round(r.width)];
});"""
_CARDS = ["#user-form", "#new-user-form", "#recs-card",
          ".results > .card:last-child", "#recs-title"]


def test_error_clears_results_and_moves_nothing(browser, server):  # pylint: disable=redefined-outer-name
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  _load(browser, server["url"] + "/?user_id=7")
  _wait(browser, lambda d: _rows(d, "recs") and _rows(d, "ratings"))
  before = browser.execute_script(_RECTS, _CARDS)
  box = browser.find_element(By.ID, "user-id")
  box.clear()
  box.send_keys("424242")
  browser.find_element(By.ID, "user-submit").click()
  _wait(browser, lambda d: _shown(d, "error"))
  assert "unknown user id '424242'" in _text(browser, "error")
  # The failed user's answer replaces user 7's: nothing stale is left.
  assert _rows(browser, "recs") == [] and _rows(browser, "ratings") == []
  assert _text(browser, "recs-title") == "Recommendations"
  assert _text(browser, "ratings-title") == "Recent ratings"
  assert "see the error above" in _text(browser, "recs-empty")
  assert not _shown(browser, "recs-order")  # no rows: no caption
  assert "user 7" not in browser.find_element(By.TAG_NAME, "body").text
  # The box sits inside the recommendations card: no card moved.
  assert browser.find_elements(By.CSS_SELECTOR, "#recs-card #error")
  assert browser.execute_script(_RECTS, _CARDS) == before
  # A good request clears the error and shows results again.
  box.clear()
  box.send_keys("7")
  browser.find_element(By.ID, "user-submit").click()
  _wait(browser, lambda d: len(_rows(d, "recs")) == 10)
  assert not _shown(browser, "error")
  assert browser.execute_script(_RECTS, _CARDS) == before


def test_score_column_orders_rows(browser, server):  # pylint: disable=redefined-outer-name
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  _load(browser, server["url"] + "/?user_id=7&k=20")
  _wait(browser, lambda d: len(_rows(d, "recs")) == 20)
  headers = browser.find_elements(By.CSS_SELECTOR, "#recs th")
  names = [h.text for h in headers]
  assert names.index("Score") == names.index("Pred.") - 1
  assert "orders the list" in headers[names.index("Score")].get_attribute(
      "title")
  assert "predicts" in headers[names.index("Pred.")].get_attribute("title")
  scores = [float(r.find_element(By.CSS_SELECTOR, "td.score").text)
            for r in _rows(browser, "recs")]
  assert scores == sorted(scores, reverse=True), scores
  preds = [float(r.find_element(By.CSS_SELECTOR, "td.pred").text)
           for r in _rows(browser, "recs")]
  assert all(1 <= p <= 5 for p in preds), preds
  assert _shown(browser, "recs-order")
  caption = _text(browser, "recs-order")
  assert "Ordered by Score" in caption and "Pred." in caption


def test_url_parameters(browser, server):  # pylint: disable=redefined-outer-name
  import httpx  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import Select  # pylint: disable=g-import-not-at-top
  url = server["url"]
  # A known user's link: the same rows as the API.
  _load(browser, url + "/?user_id=7&k=5")
  _wait(browser, lambda d: len(_rows(d, "recs")) == 5)
  api = httpx.get(url + "/recommend", params={"user_id": "7", "k": 5}).json()
  assert _ids(browser) == [x["movie_id"] for x in api["items"]]
  assert "user 7" in _text(browser, "recs-title")
  assert browser.find_element(By.ID, "user-id").get_attribute("value") == "7"
  assert Select(browser.find_element(By.ID, "k")
                ).first_selected_option.text == "5"
  assert _query(browser) == {"user_id": "7", "k": "5"}
  # What the visitor does goes to the address bar (no history entries).
  length = browser.execute_script("return history.length")
  example = browser.find_elements(By.CSS_SELECTOR, "#examples button")[-1]
  example_id = example.text
  example.click()
  _wait(browser, lambda d: f"user {example_id}" in _text(d, "recs-title"))
  Select(browser.find_element(By.ID, "k")).select_by_visible_text("20")
  _wait(browser, lambda d: len(_rows(d, "recs")) == 20)
  assert _query(browser) == {"user_id": example_id, "k": "20"}
  assert browser.execute_script("return history.length") == length

  # A new user's link: liked movies with their stars, demographics, k.
  link = ("/?rated=2:4,5&age=30&gender=F&occupation=writer&zip=94110"
          "&k=20")
  _load(browser, url + link)
  _wait(browser, lambda d: "2 movies you like" in _text(d, "recs-title"))
  assert "(F 25-34 writer)" in _text(browser, "recs-title")
  liked = browser.find_elements(By.CSS_SELECTOR, "#liked li")
  assert [li.get_attribute("data-movie-id") for li in liked] == ["2", "5"]
  assert "Toy Story" in liked[0].text
  stars = [Select(li.find_element(By.CSS_SELECTOR, "select"))
           .first_selected_option.get_attribute("value") for li in liked]
  assert stars == ["4", "5"]
  assert browser.find_element(By.ID, "age").get_attribute("value") == "30"
  assert browser.find_element(By.ID, "zip").get_attribute("value") == "94110"
  api = httpx.post(url + "/recommend", json={
      "ratings": [{"movie_id": "2", "rating": 4},
                  {"movie_id": "5", "rating": 5}],
      "age": 30, "gender": "F", "occupation": "writer", "zip": "94110",
      "k": 20}).json()
  assert _ids(browser) == [x["movie_id"] for x in api["items"]]
  # No "25+" label for the 25-34 bucket anywhere on the page.
  assert "25+" not in browser.find_element(By.TAG_NAME, "body").text
  assert "25+" not in browser.page_source
  # Changing a rating rewrites the link.
  before = int(browser.find_element(By.ID, "recs").get_attribute(
      "data-updates"))
  Select(liked[0].find_element(By.CSS_SELECTOR, "select")).select_by_value(
      "3")
  _wait(browser, lambda d: int(d.find_element(By.ID, "recs").get_attribute(
      "data-updates")) > before)
  assert _query(browser) == {"rated": "2:3,5:5", "age": "30", "gender": "F",
                             "occupation": "writer", "zip": "94110",
                             "k": "20"}

  # A link the page cannot take says what is wrong in it.
  _load(browser, url + "/?user_id=7&k=ten")
  _wait(browser, lambda d: _shown(d, "error"))
  assert 'k must be an integer in 1..100, got "ten"' in _text(browser,
                                                              "error")
  _load(browser, url + "/?rated=2,99999&age=30&gender=F&occupation=writer"
        "&zip=94110")
  _wait(browser, lambda d: _shown(d, "error"))
  assert "rated: unknown movie id '99999'" in _text(browser, "error")
  assert _rows(browser, "recs") == []


_SIDEWAYS = """const e = document.documentElement;
const scrollers = [...document.querySelectorAll("body *")].filter((x) =>
  ["auto", "scroll"].includes(getComputedStyle(x).overflowX)
  && x.scrollWidth > x.clientWidth + 1);
return [e.scrollWidth, e.clientWidth, window.innerWidth,
        scrollers.map((x) => x.id || x.className)];"""


def test_narrow_viewport_no_sideways_scroll(browser, server, tmp_path):  # pylint: disable=redefined-outer-name
  url = server["url"]
  browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
      "width": 420, "height": 900, "deviceScaleFactor": 1, "mobile": False})
  try:
    pages = (("/?user_id=7&k=20", lambda d: len(_rows(d, "recs")) == 20),
             ("/?rated=2:4,5&age=30&gender=F&occupation=writer&zip=94110",
              lambda d: len(_rows(d, "recs")) == 10),
             ("/?user_id=424242", lambda d: _shown(d, "error")),
             ("/docs", lambda d: d.execute_script(
                 "return !!document.querySelector('.swagger-ui .info')")))
    for i, (path, ready) in enumerate(pages):
      browser.get(url + path)
      _wait(browser, ready)
      scroll, client, inner, scrollers = browser.execute_script(_SIDEWAYS)
      assert inner == 420, inner
      # Neither the page nor a table inside it scrolls sideways.
      assert scroll <= client, (path, scroll, client)
      if path != "/docs":  # Swagger UI's own code blocks may scroll
        assert not scrollers, (path, scrollers)
      browser.save_screenshot(str(tmp_path / f"narrow_{i}.png"))
    print(f"screenshots: {tmp_path}/narrow_*.png")
  finally:
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.mark.parametrize("width", (1024, 1280, 1400, 1800))
def test_tables_fit_their_cards_at_desktop_widths(browser, server, width):  # pylint: disable=redefined-outer-name
  """No table scrolls inside its card (a cut-off Why or Date column)."""
  browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
      "width": width, "height": 900, "deviceScaleFactor": 1,
      "mobile": False})
  try:
    browser.get(server["url"] + "/?user_id=7&k=20")
    _wait(browser, lambda d: len(_rows(d, "recs")) == 20
          and len(_rows(d, "ratings")) > 0)
    scroll, client, inner, scrollers = browser.execute_script(_SIDEWAYS)
    assert inner == width and scroll <= client, (scroll, client, inner)
    assert not scrollers, scrollers
  finally:
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_docs_offline(browser, server):  # pylint: disable=redefined-outer-name
  """/docs renders Swagger UI with every https:// request blocked (the
  CDN FastAPI uses by default), loading only this server's files."""
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  url = server["url"]
  browser.execute_cdp_cmd("Network.enable", {})
  browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["https://*"]})
  try:
    browser.get(url + "/docs")
    _wait(browser, lambda d: d.find_elements(
        By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path"))
    title = browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title")
    assert "tfrs-pipeline recommender" in title.text
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(
        By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path")}
    assert {"/recommend", "/movies", "/similar", "/health"} <= paths, paths
    assert not browser.find_elements(By.CSS_SELECTOR, ".swagger-ui .errors")
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(n.endswith("/swagger-ui-bundle.js") for n in loaded), loaded
    assert all(n.startswith(url + "/") for n in loaded), loaded
  finally:
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    browser.execute_cdp_cmd("Network.disable", {})


def test_k_note(browser, server):  # pylint: disable=redefined-outer-name
  """Fewer rows than asked: the page says how many and why."""
  import httpx  # pylint: disable=g-import-not-at-top
  url = server["url"]
  api = httpx.get(url + "/recommend", params={"user_id": "7", "k": 100}
                  ).json()
  n = api["returned"]
  assert n < 100 and api["k_note"]
  _load(browser, url + "/?user_id=7&k=100")
  _wait(browser, lambda d: len(_rows(d, "recs")) == n)
  assert _shown(browser, "k-note")
  assert _text(browser, "k-note") == api["k_note"]
  assert _text(browser, "k-note").startswith(f"{n} of 100: ")
  # All k shown: no note.
  _load(browser, url + "/?user_id=7&k=5")
  _wait(browser, lambda d: len(_rows(d, "recs")) == 5)
  assert not _shown(browser, "k-note")
