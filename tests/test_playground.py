"""The playground at ``/`` in a real headless browser (Debian's chromium and its driver).

The session's live server runs with ``--api-key``, so the page first meets a 401 and asks
for the key. The test types the key and a message, waits for the streamed answer and checks
it against the same request made through the API; then the tools and JSON-schema modes.
It skips, saying why, where chromium, chromedriver or selenium is missing (``make setup``
installs them).
"""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from tests.conftest import API_KEY

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make setup installs it)")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no headless browser: install Debian's chromium and chromium-driver (make setup does)",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = 240):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))


def last_answer(driver):
    """The last assistant message once it has stopped streaming."""
    answers = driver.find_elements("css selector", ".message.assistant")
    if answers and "streaming" not in answers[-1].get_attribute("class"):
        return answers[-1]
    return None


def send(driver, text: str):
    from selenium.webdriver.common.keys import Keys

    before = len(driver.find_elements("css selector", ".message.assistant"))
    box = driver.find_element("id", "prompt")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    wait(driver, lambda d: len(d.find_elements("css selector", ".message.assistant")) > before)
    return wait(driver, last_answer)


def set_value(driver, element_id: str, value: str) -> None:
    element = driver.find_element("id", element_id)
    element.clear()
    element.send_keys(value)


def test_the_playground_streams_an_answer_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser.get(server.base_url + "/")
    assert browser.title == "chatcap playground"
    # Keys are on: the models request gets 401 and the page asks for the key.
    key = wait(browser, lambda d: d.find_element("id", "api-key") if d.find_element("id", "key-row").is_displayed()
               else None)
    key.send_keys(API_KEY, Keys.TAB)
    wait(browser, lambda d: [o.text for o in Select(d.find_element("id", "model")).options] == [MODEL])
    assert browser.execute_script("return localStorage.getItem('chatcap.apiKey')") == API_KEY
    set_value(browser, "temperature", "0")
    set_value(browser, "max-tokens", "24")
    set_value(browser, "system", "You are a terse assistant.")

    answer = send(browser, "Name three colors.")
    text = answer.find_element("css selector", ".content").text
    expected = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120,
                          headers={"Authorization": f"Bearer {API_KEY}"},
                          json={"model": MODEL, "temperature": 0, "max_tokens": 24, "messages": [
                              {"role": "system", "content": "You are a terse assistant."},
                              {"role": "user", "content": "Name three colors."}]}).json()
    assert text == expected["choices"][0]["message"]["content"].strip()
    stats = browser.find_element("id", "stats").text
    usage = expected["usage"]
    assert f"prompt {usage['prompt_tokens']}" in stats and f"completion {usage['completion_tokens']}" in stats
    assert "tokens/s" in stats and "first token" in stats and "finish_reason" in stats
    assert browser.find_element("id", "error").is_displayed() is False

    assert not browser.find_element("id", "schema-row").is_displayed()
    assert not browser.find_element("id", "tools-row").is_displayed()
    Select(browser.find_element("id", "mode")).select_by_value("tools")
    assert browser.find_element("id", "tools-row").is_displayed()
    assert not browser.find_element("id", "schema-row").is_displayed()
    Select(browser.find_element("id", "tool-choice")).select_by_value("required")
    set_value(browser, "max-tokens", "64")
    browser.find_element("id", "clear").click()
    answer = send(browser, "What is the weather in Paris?")
    calls = answer.find_element("css selector", ".tool-calls").text
    assert calls.startswith("tool_calls:") and "get_weather (call_" in calls and '"city"' in calls
    stats = browser.find_element("id", "stats").text  # a second call may be cut by the 64 tokens
    assert "finish_reason tool_calls" in stats or "finish_reason length" in stats, stats
    browser.save_screenshot(str(tmp_path / "playground-tools.png"))

    Select(browser.find_element("id", "mode")).select_by_value("json")
    browser.find_element("id", "clear").click()
    answer = send(browser, "Invent a person.")
    person = json.loads(answer.find_element("css selector", ".content").text)
    assert isinstance(person["name"], str) and isinstance(person["age"], int)
    browser.save_screenshot(str(tmp_path / "playground.png"))
    print(f"\nscreenshots: {tmp_path}/playground.png, playground-tools.png")

    # Offline: everything the page loaded came from this server.
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(server.base_url + "/") for url in loaded), loaded

