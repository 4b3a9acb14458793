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
  assert len(cells) == 7 and cells[1].text  # title
  headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR,
                                                   "#recs th")]
  assert "Director" in headers and "Star" in headers
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

  # New user from demographics.
  browser.find_element(By.ID, "new-user-submit").click()
  _wait(browser, lambda d: "new user" in d.find_element(
      By.ID, "recs-title").text)
  assert len(_rows(browser, "recs")) == 10
  assert not browser.find_element(By.ID, "error").is_displayed()
  assert _rows(browser, "ratings") == []
  browser.save_screenshot(str(tmp_path / "page_new_user.png"))
