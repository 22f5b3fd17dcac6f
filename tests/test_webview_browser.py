"""The web view as a teacher sees it: Debian's Chromium, headless, driven by Selenium.

Selenium is given chromedriver's path, so Selenium Manager never downloads anything;
a missing Chromium fails the test under CI (require_tool).
"""

from __future__ import annotations

import base64
import json
import poplib
import smtplib
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import USERS, ServerProcess, WebRun, require_tool, wait_for
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select

from mailserver.webview import start_web_view

PASSWORD = USERS["alice"]
# Known to work headless here, as root too, with nothing fetched from the network by Chromium itself.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the module, with its console and network logs."""
    options = webdriver.ChromeOptions()
    options.binary_location = require_tool("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=require_tool("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: webdriver.Chrome, web_server: Callable[..., WebRun]) -> WebRun:
    """A server with the web view, open in the browser and live."""
    run = web_server()
    open_view(browser, run.url)
    browser.get_log("browser")  # start each test with empty logs
    browser.get_log("performance")
    return run


def open_view(browser: webdriver.Chrome, url: str) -> None:
    browser.get(url)
    wait_for(lambda: browser.find_element(By.ID, "link").text == "● live")


def lane(browser: webdriver.Chrome, user: str) -> WebElement | None:
    """The lane of the session of user, if drawn (looked up in one step: a lane's head is redrawn as it goes)."""
    return browser.execute_script(  # type: ignore[no-any-return]
        "return [...document.querySelectorAll('#lanes .lane')]"
        ".find((lane) => lane.querySelector('.user').textContent === arguments[0]) || null",
        f"user {user}",
    )


def alice_sends(run: WebRun, *, helo: str = "laptop", subject: str = "hi", to: str = "bob@mail.test") -> None:
    with smtplib.SMTP(run.mail.host, run.mail.port, timeout=10) as smtp:
        smtp.ehlo(helo)
        smtp.login("alice", PASSWORD)
        smtp.sendmail("alice@mail.test", [to], f"Subject: {subject}\r\n\r\nhello bob\r\nsecond line\r\n")


def bob_reads_his_inbox(browser: webdriver.Chrome, run: WebRun) -> poplib.POP3:
    """alice sends bob a message, bob reads it over POP3; his session stays open, drawn with the message."""
    alice_sends(run)
    pop = poplib.POP3(run.mail.host, run.mail.pop3_port, timeout=10)
    pop.user("bob")
    pop.pass_(USERS["bob"])
    pop.retr(1)
    wait_for(lambda: (found := lane(browser, "bob")) is not None and "✉ message" in found.text)
    return pop


def open_every_message(browser: webdriver.Chrome) -> None:
    """Click every folded message open, and wait for their text (fetched when opened)."""
    folds = browser.find_elements(By.CSS_SELECTOR, ".fold")
    for fold in folds:
        fold.click()
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".body")) == len(folds))


def requests_made(browser: webdriver.Chrome) -> list[str]:
    """The URLs the page asked for since the last look (Chromium's performance log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_the_page_loads_with_no_console_error_and_nothing_from_elsewhere(
    browser: webdriver.Chrome, web_server: Callable[..., WebRun]
) -> None:
    run = web_server()
    browser.get_log("performance")
    open_view(browser, run.url)
    alice_sends(run)
    wait_for(lambda: lane(browser, "alice") is not None)
    urls = requests_made(browser)
    assert {url.split("?")[0] for url in urls} >= {run.origin() + path for path in ("/", "/view.js", "/view.css")}
    # chrome:// pages are the browser's own (its new-tab page, say), data: never leaves the machine.
    network = [url for url in urls if urllib.parse.urlsplit(url).scheme not in ("chrome", "about", "data")]
    assert [url for url in network if not url.startswith(run.origin() + "/")] == []
    assert browser.get_log("browser") == []


def test_an_smtp_session_is_drawn_as_it_happens_with_its_explanations_and_where_the_mail_went(
    browser: webdriver.Chrome, page: WebRun
) -> None:
    with smtplib.SMTP(page.mail.host, page.mail.port, timeout=10) as smtp:
        smtp.ehlo("laptop")
        smtp.login("alice", PASSWORD)
        smtp.sendmail("alice@mail.test", ["bob@mail.test", "dan@example.org"], "Subject: hi\r\n\r\nhello bob\r\n")
        # Drawn while the session is still open: the teacher sees it happen.
        wait_for(lambda: (found := lane(browser, "alice")) is not None and "mail accepted" in found.text)
        drawn = lane(browser, "alice")
        assert drawn is not None
        assert drawn.find_element(By.CSS_SELECTOR, ".state").text == "logged in"
    arrows = drawn.find_elements(By.CSS_SELECTOR, ".row.c2s .said")
    assert [arrow.text for arrow in arrows[:3]] == [
        "ehlo laptop",
        "AUTH PLAIN ********",
        "mail FROM:<alice@mail.test> size=26",
    ]
    replies = drawn.find_elements(By.CSS_SELECTOR, ".row.s2c")
    authenticated = next(r for r in replies if "235 2.7.0" in r.text)
    assert authenticated.find_element(By.CSS_SELECTOR, ".why").text.startswith("235: ")
    assert (
        drawn.find_element(By.CSS_SELECTOR, ".message .fold").text == "✉ message: 3 lines, 26 bytes"
    )  # as SIZE= counts
    flows = [item.text for item in drawn.find_elements(By.CSS_SELECTOR, ".flow li")]
    assert flows == [
        "alice@mail.test ⇒ bob's inbox (bob@mail.test)",
        "alice@mail.test → dan@example.org: kept in Sent: not a user of this server",
    ]
    assert [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#deliveries .flows li")] == flows


def test_a_pop3_session_is_drawn_with_its_user_and_the_message_folded(browser: webdriver.Chrome, page: WebRun) -> None:
    pop = bob_reads_his_inbox(browser, page)
    drawn = lane(browser, "bob")
    assert drawn is not None
    head = drawn.find_element(By.CSS_SELECTOR, ".lane-head").text
    assert head.split("\n")[0::2] == ["POP3", "no TLS", "logged in"]
    assert head.split("\n")[1].startswith("127.0.0.1:") and head.split("\n")[3] == "user bob"
    assert "PASS ********" in drawn.text
    ok = next(r for r in drawn.find_elements(By.CSS_SELECTOR, ".row.s2c") if r.text.startswith("S:\n+OK bob has"))
    assert ok.find_element(By.CSS_SELECTOR, ".why").text.startswith("+OK: ")
    wait_for(lambda: "logged in over POP3\nbob\n" in browser.find_element(By.ID, "who").text)
    pop.quit()


def test_the_password_and_its_base64_are_never_in_the_page(browser: webdriver.Chrome, page: WebRun) -> None:
    alice_sends(page)
    with smtplib.SMTP(page.mail.host, page.mail.port, timeout=10) as smtp:
        smtp.ehlo("laptop")
        smtp.user, smtp.password = "alice", PASSWORD
        smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#finished li")) == 2)
    browser.find_element(By.ID, "bodies").click()
    open_every_message(browser)
    html = browser.page_source
    plain = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, plain, plain.rstrip("="), base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in html


HOSTILE = '<img src=x onerror="document.title=`pwned`">'


def test_hostile_names_addresses_and_subjects_are_drawn_as_text(browser: webdriver.Chrome, page: WebRun) -> None:
    elements_before = len(browser.find_elements(By.CSS_SELECTOR, "img, script, iframe"))
    alice_sends(
        page, helo=HOSTILE.replace(" ", ""), subject=f"</script><script>document.title='pwned'</script>{HOSTILE}"
    )
    with smtplib.SMTP(page.mail.host, page.mail.port, timeout=10) as smtp:
        smtp.ehlo("laptop")
        smtp.login("alice", PASSWORD)
        smtp.mail("alice@mail.test")
        smtp.rcpt('"<img/src=x/onerror=alert(1)>"@example.org')
        smtp.docmd(HOSTILE)
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#finished li")) == 2)
    browser.find_element(By.ID, "bodies").click()
    open_every_message(browser)
    text = browser.find_element(By.ID, "lanes").text
    assert "ehlo " + HOSTILE.replace(" ", "") in text
    assert "</script><script>document.title='pwned'</script>" in text
    assert HOSTILE in text
    assert len(browser.find_elements(By.CSS_SELECTOR, "img, script, iframe")) == elements_before
    assert browser.title == "Mail server, live"
    assert browser.get_log("browser") == []


def test_message_text_stays_hidden_until_turned_on(browser: webdriver.Chrome, page: WebRun) -> None:
    alice_sends(page, subject="the secret plan")
    wait_for(lambda: lane(browser, "alice") is not None and browser.find_elements(By.CSS_SELECTOR, ".fold"))
    fold = browser.find_element(By.CSS_SELECTOR, ".fold")
    fold.click()  # bodies off: nothing shown, nothing even asked of the server
    assert "the secret plan" not in browser.page_source
    browser.find_element(By.ID, "bodies").click()
    fold.click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".body"))  # fetched when opened
    assert "Subject: the secret plan" in browser.find_element(By.CSS_SELECTOR, ".body").text
    # The first click's request, had there been one, was sent before this one's answer came.
    assert len([url for url in requests_made(browser) if "/message?" in url]) == 1
    browser.find_element(By.ID, "bodies").click()  # off again: the text goes
    assert "the secret plan" not in browser.page_source
    open_view(browser, page.url)  # a reload: off, as at every start
    assert not browser.find_element(By.ID, "bodies").is_selected()


def test_a_finished_session_can_be_replayed_line_by_line_and_filtered(browser: webdriver.Chrome, page: WebRun) -> None:
    alice_sends(page)
    pop = poplib.POP3(page.mail.host, page.mail.pop3_port, timeout=10)
    pop.user("bob")
    pop.pass_(USERS["bob"])
    pop.quit()
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#finished li")) == 2)
    Select(browser.find_element(By.ID, "filter-protocol")).select_by_visible_text("POP3")
    [only] = browser.find_elements(By.CSS_SELECTOR, "#finished li")
    assert "POP3" in only.text and "bob" in only.text
    Select(browser.find_element(By.ID, "filter-protocol")).select_by_visible_text("all")
    browser.find_element(By.ID, "filter-user").send_keys("ali")
    [only] = browser.find_elements(By.CSS_SELECTOR, "#finished li button")
    assert "SMTP" in only.text and "alice" in only.text
    only.click()
    replay = browser.find_element(By.ID, "replay-lane")
    assert len(replay.find_elements(By.CSS_SELECTOR, ".row")) == 1
    assert replay.find_element(By.CSS_SELECTOR, ".row").text.startswith("S:\n220 mail.test")
    browser.find_element(By.ID, "replay-next").click()
    rows = replay.find_elements(By.CSS_SELECTOR, ".row .said")
    assert [row.text for row in rows] == ["220 mail.test Service ready", "ehlo laptop"]
    browser.find_element(By.ID, "replay-all").click()
    assert "221 mail.test Service closing transmission channel" in replay.text
    browser.find_element(By.ID, "replay-close").click()
    assert not browser.find_element(By.ID, "replay").is_displayed()


def test_large_text_mode_makes_the_text_larger(browser: webdriver.Chrome, page: WebRun) -> None:
    def font_size() -> float:
        return float(browser.execute_script("return parseFloat(getComputedStyle(document.body).fontSize)"))

    before = font_size()
    browser.find_element(By.ID, "large").click()
    assert font_size() >= before * 1.4


def test_the_page_says_it_lost_the_server_and_comes_back_after_a_restart(
    browser: webdriver.Chrome, page: WebRun
) -> None:
    port = page.view.server_address[1]
    page.view.close()
    wait_for(lambda: "lost the server" in browser.find_element(By.ID, "link").text)
    restarted = start_web_view(page.mail.server, page.events, "127.0.0.1", port, page.view.client_file)
    try:
        wait_for(lambda: browser.find_element(By.ID, "link").text == "● live")
        alice_sends(page)
        wait_for(lambda: lane(browser, "alice") is not None)
    finally:
        restarted.close()


def free_port() -> int:
    """A port free now on 127.0.0.1 (for a server that must come back on the same one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_real_server_restart_the_page_says_so_and_comes_back(
    browser: webdriver.Chrome, server_process: Callable[..., ServerProcess]
) -> None:
    port = str(free_port())
    first = server_process("--web", "--web-port", port)
    assert f"web view on http://127.0.0.1:{port}/\n" in first.log
    open_view(browser, f"http://127.0.0.1:{port}/")
    first.stop()
    wait_for(lambda: "lost the server" in browser.find_element(By.ID, "link").text)
    second = server_process("--web", "--web-port", port)
    wait_for(lambda: browser.find_element(By.ID, "link").text == "● live")
    with smtplib.SMTP("127.0.0.1", second.port, timeout=10) as smtp:
        smtp.ehlo("laptop")
        smtp.login("alice", PASSWORD)
        wait_for(lambda: lane(browser, "alice") is not None)


def test_on_an_exposed_address_the_page_works_with_the_printed_url_only(
    browser: webdriver.Chrome, web_server: Callable[..., WebRun]
) -> None:
    run = web_server(host="127.0.0.2")
    browser.delete_all_cookies()
    browser.get(run.origin() + "/")
    assert "403" in browser.title or "Forbidden" in browser.page_source
    assert not browser.find_elements(By.ID, "lanes")
    open_view(browser, run.url)  # the token in the URL, then the page's cookie for its script and stream
    alice_sends(run)
    wait_for(lambda: lane(browser, "alice") is not None)
    token = urllib.parse.urlsplit(run.url).query
    assert token not in browser.page_source


def test_a_screenshot_of_a_class_at_work(browser: webdriver.Chrome, page: WebRun) -> None:
    pop = bob_reads_his_inbox(browser, page)
    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "webview.png"
    try:
        assert browser.save_screenshot(str(shot))
    except WebDriverException as error:
        pytest.fail(f"no screenshot: {error}")
    assert shot.read_bytes().startswith(b"\x89PNG")
    pop.quit()
