"""The status page in a real browser (Debian's chromium, headless, through chromedriver)."""
import json
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    yield b
    b.quit()


def check(browser, receipt_text, allow_dev=True):
    browser.find_element(By.ID, "receipt").clear()
    # Pasting a large JSON key by key is slow; set the value as a paste would.
    browser.execute_script("document.getElementById('receipt').value = arguments[0];", receipt_text)
    box = browser.find_element(By.ID, "allow-dev")
    if box.is_selected() != allow_dev:
        box.click()
    browser.find_element(By.ID, "verify-button").click()
    verdict = browser.find_element(By.ID, "verdict")
    WebDriverWait(browser, 20).until(lambda _: verdict.text not in ("", "…"))
    reasons = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#reasons li")]
    return verdict.text, reasons


def test_the_status_page_shows_the_pin_and_verifies_a_pasted_receipt(tiny, browser):
    answer = tiny.http.post("/v1/completions", json={"model": tiny.name, "prompt": "Hi", "max_tokens": 3}).json()
    receipt = answer["cocoon"]["receipt"]
    browser.get(tiny.url + "/")
    assert browser.find_element(By.ID, "pin").text == tiny.pin
    assert browser.find_element(By.ID, "model").text == tiny.name
    assert browser.find_element(By.ID, "evidence-verdict").text == "dev"
    assert int(browser.find_element(By.ID, "requests").text) >= 1
    verdict, reasons = check(browser, json.dumps(receipt))
    assert verdict == "ok", reasons
    # The whole answer may be pasted too.
    assert check(browser, json.dumps(answer))[0] == "ok"
    tampered = json.loads(json.dumps(receipt))
    tampered["body"]["output"]["text_sha256"] = "0" * 64
    verdict, reasons = check(browser, json.dumps(tampered))
    assert verdict == "rejected" and any("binding" in r for r in reasons), reasons
    # Dev evidence without the box ticked is rejected.
    assert check(browser, json.dumps(receipt), allow_dev=False)[0] == "rejected"
    assert check(browser, "{ not json")[0] == "malformed"
