"""The chat page at / in a real headless browser (Debian chromium driven by Selenium with the system
chromedriver; no browser download): type a message, see the streamed reply, and a code-interpreter
tool call with its sandboxed output. Skips without /usr/bin/chromium and /usr/bin/chromedriver.
HERD_SCREENSHOT=docs/img/serve-chat.png writes the screenshot of docs/serving.md."""

import os
import shutil

import pytest
from serve_util import API_KEY, TODAY, dialogs, live_server

from herd.serve.app import create_app

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
    reason="needs Debian chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,800",
    ):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_chat_page_streams_a_reply_and_shows_tool_calls(trained, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    _, model, tok = trained
    app = create_app(
        model, tok, model_name="tiny-chat", api_key=API_KEY, max_seq_len=1024, today=TODAY, tool_loop=True
    )
    with live_server(app) as url:
        b = browser
        b.get(url + "/")
        wait = WebDriverWait(b, 60)
        key = b.find_element(By.ID, "apikey")
        key.send_keys(API_KEY)
        key.send_keys(Keys.TAB)  # change event: the model list loads with the key
        wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("value") == "tiny-chat")
        t = b.find_element(By.ID, "temperature")
        t.clear()
        t.send_keys("0")
        box = b.find_element(By.ID, "input")
        box.send_keys("Hello, who are you?")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-state=done]"))
        msg = b.find_element(By.CSS_SELECTOR, ".msg.assistant")
        assert msg.find_element(By.CLASS_NAME, "content").text == dialogs()[0][2]
        assert msg.get_attribute("data-finish") == "stop"
        assert "tokens in" in msg.find_element(By.CLASS_NAME, "meta").text
        # a code-interpreter call, run in the sandbox by the server's tool loop, then the answer
        b.find_element(By.ID, "reset").click()
        b.find_element(By.ID, "tools").click()
        box.send_keys("What is 6 times 7? Use Python.")
        b.find_element(By.ID, "send").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-state=done]"))
        msg = b.find_element(By.CSS_SELECTOR, ".msg.assistant")
        tools = [e.text for e in msg.find_elements(By.CLASS_NAME, "tool")]
        assert len(tools) == 2 and "code_interpreter" in tools[0] and "print(6*7)" in tools[0]
        assert "42" in tools[1] and "[passed]" in tools[1]
        blocks = [e.get_attribute("class") for e in msg.find_elements(By.CSS_SELECTOR, ".content, .tool")]
        assert blocks[-1] == "content" and blocks.count("tool") == 2  # the answer comes after the tool boxes
        text = "".join(e.text for e in msg.find_elements(By.CLASS_NAME, "content"))
        assert text == "The code printed 42, so 6 times 7 is 42."
        # the first exchange again, above the tool one, for the screenshot
        b.find_element(By.ID, "tools").click()
        box.send_keys("Tell me a story.")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-state=done]")) == 2)
        shot = os.environ.get("HERD_SCREENSHOT") or str(tmp_path / "chat.png")
        os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
        assert b.save_screenshot(shot) and os.path.getsize(shot) > 10_000
