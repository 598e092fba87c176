"""The web chat at /, in headless Chromium: models, send, streaming, thinking, stop (the server
cancels), error banners, and model output that tries script injection rendered inert.

Uses Debian's chromium (`make setup` installs it as root with apt) through Python `playwright`;
no browser is ever downloaded. Without /usr/bin/chromium these tests skip and say so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charter.serve.app import CONTENT_SECURITY_POLICY
from tests.serve_helpers import Script, health, micro_registry, reply_ids, running_server, wait_for

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "web-key"

sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian chromium is not installed at /usr/bin/chromium (`make setup` installs it "
    "where it runs as root with apt)",
)


@pytest.fixture(scope="module")
def registry(tokenizer):
    registry = micro_registry(tokenizer, {"micro": (2, 2), "other": (1, 1)})
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def base_url(registry):
    with running_server(registry, api_keys=[KEY]) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        browser.close()


class Page:
    """A fresh page on the chat; records requests, failed requests and console lines."""

    def __init__(self, browser, base_url: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.console: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("requestfailed", lambda r: self.failed.append((r.url, r.failure)))
        self.page.on("console", lambda message: self.console.append(message.text))
        self.response = self.page.goto(base_url + "/")

    def enter_key(self) -> None:
        self.page.fill("#api-key", KEY)
        self.page.dispatch_event("#api-key", "change")
        # (Not wait_for_function: it evaluates strings, which the page's CSP rightly forbids.)
        self.page.wait_for_selector("#model option", state="attached")

    def send(self, text: str) -> None:
        self.page.fill("#prompt", text)
        self.page.click("#send")

    def wait_for_note(self) -> str:
        note = self.page.wait_for_selector(".message.assistant .note", timeout=20_000)
        return note.inner_text()


@pytest.fixture
def chat(browser, base_url):
    page = Page(browser, base_url)
    yield page
    page.context.close()


@pytest.fixture
def script(monkeypatch, registry):
    return Script(monkeypatch, registry.get("micro"))


def test_the_page_asks_for_a_key_then_lists_the_models(chat, base_url):
    assert chat.response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    chat.page.wait_for_selector("#error:not([hidden])")
    assert "401 authentication_error: missing API key" in chat.page.inner_text("#error-text")
    chat.enter_key()
    options = chat.page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert options == ["micro", "other"]
    assert chat.page.is_hidden("#error")
    assert all(url.startswith(base_url) for url in chat.requests)  # nothing leaves the server


def test_send_streams_markdown_with_collapsible_thinking(chat, script, tokenizer):
    chat.enter_key()
    chat.page.fill("#system", "Answer in Markdown.")
    chat.page.fill("#temperature", "0.2")
    chat.page.fill("#max-tokens", "120")
    chat.page.check("#thinking")
    chat.page.fill("#budget", "50")
    reply = (
        "The user greets me.\n</think>\nHello **world**, this is `code` and a list:\n\n- one\n- two"
    )
    script.reply(reply_ids(tokenizer, reply), delay=0.03)
    chat.send("Hi there")
    seen = set()
    while not chat.page.query_selector(".message.assistant .note"):
        seen.add(
            chat.page.inner_text(".message.assistant")
            if chat.page.query_selector(".markdown")
            else ""
        )
    assert len(seen) >= 4  # the answer grew piece by piece
    assert chat.wait_for_note().startswith("end_turn · ")
    answer = chat.page.query_selector(".message.assistant .markdown")
    assert answer.inner_html().startswith(
        "<p>Hello <strong>world</strong>, this is <code>code</code>"
    )
    assert [li.inner_text() for li in answer.query_selector_all("li")] == ["one", "two"]
    thinking = chat.page.query_selector(".message.assistant details.thinking")
    assert thinking.get_attribute("open") is None  # collapsed
    assert thinking.query_selector(".thinking-text").text_content() == "The user greets me."
    request = script.requests[-1]
    assert (request.params.temperature, request.params.max_new_tokens) == (0.2, 120)
    prompt = tokenizer.decode(request.prompt_ids)
    assert "Answer in Markdown." in prompt and prompt.endswith("<think>\n")
    assert chat.page.inner_text(".message.user") == "You\nHi there"


def test_stop_aborts_and_the_server_cancels_the_generation(chat, script, tokenizer, base_url):
    chat.enter_key()
    chat.page.fill("#max-tokens", "300")
    script.reply(reply_ids(tokenizer, "word " * 300, end_turn=False), delay=0.03)
    before = health(base_url, "micro")["cancelled"]
    chat.send("Talk for a long time")
    wait_for(lambda: len(chat.page.inner_text(".message.assistant")) > 40)
    chat.page.click("#stop")
    assert chat.wait_for_note() == "stopped"
    stats = wait_for(lambda: (s := health(base_url, "micro"))["active"] == 0 and s, timeout=5)
    assert stats["cancelled"] == before + 1 and stats["max_tokens_after_cancel"] <= 1
    assert len(script.requests[-1].generated) < 150
    assert chat.page.is_enabled("#send") and chat.page.is_disabled("#stop")


def test_model_output_cannot_inject_html_or_load_remote_images(chat, script, tokenizer):
    chat.enter_key()
    payload = (
        "# Report\n\n"
        '<img src="x" onerror="window.__xss = 1"> <script>window.__xss = 2</script>\n\n'
        "[click me](javascript:window.__xss=3)\n\n"
        "![tracker](http://127.0.0.2:9/leak.png)\n\n"
        "**done**"
    )
    script.reply(reply_ids(tokenizer, payload))
    chat.send("Show me")
    assert chat.wait_for_note().startswith("end_turn")
    answer = chat.page.query_selector(".message.assistant .markdown")
    assert answer.query_selector("h1").inner_text() == "Report"
    assert answer.query_selector("strong").inner_text() == "done"
    assert answer.query_selector_all("script") == []
    assert answer.query_selector_all("[onerror]") == []
    assert answer.query_selector_all("a[href^='javascript']") == []
    text = answer.inner_text()
    assert '<img src="x" onerror="window.__xss = 1">' in text  # shown as text, not run
    assert "[click me](javascript:window.__xss=3)" in text
    chat.page.wait_for_timeout(300)  # give any handler a chance to run
    assert chat.page.evaluate("window.__xss") is None
    # The remote image is in the DOM, but the CSP blocks it before anything is sent.
    assert answer.query_selector("img").get_attribute("src") == "http://127.0.0.2:9/leak.png"
    wait_for(lambda: chat.failed)
    # (Each re-render while streaming makes a new <img>: every attempt is blocked.)
    assert set(chat.failed) == {("http://127.0.0.2:9/leak.png", "csp")}
    assert any("Content Security Policy" in line for line in chat.console)


def test_api_errors_show_a_banner_and_the_question_can_be_resent(chat, script):
    chat.enter_key()
    chat.page.fill("#max-tokens", "0")
    chat.send("Hello?")
    chat.page.wait_for_selector("#error:not([hidden])")
    assert chat.page.inner_text("#error-text") == (
        "400 invalid_request_error: max_tokens: Input should be greater than or equal to 1"
    )
    assert chat.page.query_selector_all(".message") == []
    assert chat.page.input_value("#prompt") == "Hello?"
    chat.page.click("#error-close")
    assert chat.page.is_hidden("#error")
    assert json.loads(json.dumps(script.requests)) == []  # nothing reached the model


def test_the_chosen_models_card_is_shown_rendered_and_inert(chat, registry):
    registry.get("micro").card = (
        "# Model card: micro\n\n| metric | value |\n|---|---|\n| jailbreak.asr | 0.031 |\n\n"
        '<script>window.__xss = 4</script> <img src="x" onerror="window.__xss = 5">\n'
    )
    try:
        chat.enter_key()
        chat.page.click("#card-panel summary")  # the card is folded away until asked for
        chat.page.wait_for_selector("#card h1")
        card = chat.page.query_selector("#card")
        assert card.query_selector("h1").inner_text() == "Model card: micro"
        assert [td.inner_text() for td in card.query_selector_all("td")] == [
            "jailbreak.asr",
            "0.031",
        ]
        assert card.query_selector_all("script") == [] and card.query_selector_all("img") == []
        assert chat.page.evaluate("window.__xss") is None
        chat.page.select_option("#model", "other")
        chat.page.wait_for_selector("#card:not(:has(h1))", state="attached")
        assert chat.page.inner_text("#card").startswith("No card: 404 not_found_error")
    finally:
        registry.get("micro").card = None
