"""The web page in a real headless browser (Debian's chromium, driven through chromedriver by selenium): pick
a built-in voice, speak, hear it stream, replay it from the <audio> element; upload a voice. Chromium comes
from scripts/install_system_deps.sh (`make env`); without it this test fails and says so, it never skips."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from suite_helpers import SPEECH

CLIP = SPEECH / "cmu-arctic-sample" / "cmu_arctic_us_axb_a0005.wav"
# no sandbox (tests run as root), and none of chromium's background connections (the network is closed)
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
                  "--window-size=1000,1100"]


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.fail("chromium and chromedriver are not installed: run `make env` or `bash "
                    "scripts/install_system_deps.sh` (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def body_data(driver: webdriver.Chrome, key: str) -> str | None:
    return driver.find_element(By.TAG_NAME, "body").get_attribute(f"data-{key}")


def test_the_page_speaks_with_a_builtin_voice_and_saves_a_screenshot(serve, browser, tmp_path,
                                                                     tiny_synth) -> None:
    served = serve(tmp_path / "voices")
    browser.get(served.server.url + "/")
    WebDriverWait(browser, 60).until(lambda d: body_data(d, "voices") == "2")
    Select(browser.find_element(By.ID, "voice")).select_by_value("arctic-aew")
    text = browser.find_element(By.ID, "text")
    text.clear()
    text.send_keys("Hello from the browser. A second sentence streams in after it.")
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "speak").click()
    WebDriverWait(browser, 120).until(lambda d: body_data(d, "state") in ("done", "error"))
    status = browser.find_element(By.ID, "status").text
    assert body_data(browser, "state") == "done", status
    assert int(body_data(browser, "chunks")) >= 2  # it arrived, and was scheduled for playing, in pieces
    assert int(body_data(browser, "first-audio-ms")) >= 0 and "first audio after" in status

    duration = WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "const a = document.getElementById('player'); return a.duration > 0 ? a.duration : null;"))
    frames = math.ceil(0.5 * tiny_synth.codec.frame_rate)  # two sentences of max_seconds, one pause
    expected = 2 * frames / tiny_synth.codec.frame_rate + tiny_synth.defaults.pause_seconds
    assert abs(duration - expected) < 1e-3
    played = browser.execute_async_script("""
        const done = arguments[arguments.length - 1], audio = document.getElementById('player');
        audio.addEventListener('timeupdate', () => { if (audio.currentTime > 0) done(audio.currentTime); });
        audio.play().catch((e) => done('play failed: ' + e));""")
    assert isinstance(played, float | int) and played > 0, played
    screenshot = tmp_path / "web_page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")


def test_the_page_uploads_a_voice_and_picks_it(serve, browser, tmp_path) -> None:
    served = serve(tmp_path / "voices")
    browser.get(served.server.url + "/")
    WebDriverWait(browser, 60).until(lambda d: body_data(d, "voices") == "2")
    browser.execute_script("document.querySelector('details').open = true;")
    browser.find_element(By.ID, "voice-file").send_keys(str(CLIP))
    browser.find_element(By.ID, "voice-name").send_keys("Phil")
    browser.find_element(By.ID, "upload").click()
    status = browser.find_element(By.ID, "upload-status")
    WebDriverWait(browser, 60).until(lambda _: "Saved" in status.text
                                     or "error" in status.get_attribute("class"))
    assert status.text == 'Saved as "Phil".'
    chosen = Select(browser.find_element(By.ID, "voice")).first_selected_option
    assert chosen.text.startswith("Phil (yours)") and served.voices.get(chosen.get_attribute("value"))
    assert browser.find_element(By.ID, "delete-voice").is_enabled()
