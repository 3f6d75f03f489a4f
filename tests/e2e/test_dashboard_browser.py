"""The dashboard in a real browser: headless Chromium (the Debian package, driven by Selenium
through the system ``chromedriver``) opens the dashboard of a live tiny run, sees its lineage
grow, opens a decision and reads its evidence, finds an audio element whose source is a valid
WAV, and exports the schedule. A screenshot of each page is kept in ``test-artifacts/dashboard/``
(or ``$SMART_TUNER_ARTIFACTS/dashboard/``).

Without Chromium the test is skipped on a developer's machine and fails in CI (``CI=true``),
whose ``.ci/run`` installs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from smart_tuner.protocol import messages as m
from tests.e2e.cliharness import Cli

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SMART_TUNER_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
TOKEN = "browser-test-token"
RUN = (
    "budget: {max_steps: 60}\n"
    "forks: {warmup_steps: 10, probe_steps: 5, exploit_steps: 10, first_round_candidates: 3}\n"
    "trainer: {preset: tiny, dataset: tiny, data_dir: data, threads: 1, val_count: 4, heartbeat_s: 0.5,"
    " test_dataset: data/tiny-corpus}\n"
)


def _browser_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    paths = _browser_paths()
    if paths is None:
        message = "Chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/run installs them")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1500,1000",
    ):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(predicate: Any, what: str, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # the page may be re-rendering the element we look at
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def shoot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def tab(driver: Any, name: str) -> None:
    driver.find_element("css selector", f'#tabs button[data-tab="{name}"]').click()


def test_a_browser_follows_a_live_run_reads_a_decision_plays_a_sample_and_exports_the_schedule(
    cli: Cli, browser: Any
) -> None:
    coordinator = cli.spawn(
        "coordinator", "run", "--config", cli.write_config("run.yaml", RUN), "--run-dir", "runs/web"
    )
    root = cli.cwd / "runs/web"
    cli.wait_until((root / "config.yaml").is_file, "the run directory exists", proc=coordinator)
    dashboard = cli.spawn("dashboard", "dashboard", root, "--port", "0", "--token", TOKEN)
    cli.wait_until(lambda: "?token=" in dashboard.stdout(), "the dashboard's address", proc=dashboard)
    url = re.search(r"(http://127\.0\.0\.1:\d+/)\?token=", dashboard.stdout()).group(1)  # type: ignore[union-attr]

    browser.get(f"{url}?token={TOKEN}")  # once with the token: a cookie, and the address without it
    assert "token" not in browser.current_url and browser.title == "Smart Tuner"

    def segments() -> int:
        return len(browser.find_elements("css selector", "#lineage .seg"))

    first = wait_for(segments, "the first segment in the lineage")
    assert wait_for(lambda: "live" in browser.find_element("id", "live").get_attribute("class"), "the live badge")
    shoot(browser, "1-lineage-early")
    grown = wait_for(lambda: segments() > first and segments(), "the lineage to grow (live, over SSE)")
    assert grown > first
    shoot(browser, "2-lineage-grown")

    # a segment's details, then a decision's evidence
    browser.find_elements("css selector", "#lineage .seg")[0].click()
    assert wait_for(
        lambda: browser.find_element("css selector", "#inspect-body h3").text.startswith("segment "), "segment"
    )
    assert coordinator.wait() == 0, coordinator.output()  # the run ends by itself (its budget)
    events = cli.events(root)
    promoted = next(e for e in events if isinstance(e.data, m.ChampionPromoted) and e.data.evidence.get("candidates"))
    wait_for(lambda: "ended" in browser.find_element("id", "live").text, "the page to see the end of the run")
    tab(browser, "decisions")
    item = wait_for(lambda: browser.find_element("css selector", f'#decisions li[data-seq="{promoted.seq}"]'), "it")
    item.click()
    evidence = wait_for(lambda: browser.find_element("css selector", "#inspect-body pre.evidence").text, "evidence")
    shown = json.loads(evidence)
    assert shown["candidates"] == json.loads(json.dumps(promoted.data.evidence["candidates"]))
    assert promoted.data.reason in browser.find_element("css selector", "#inspect-body .reason").text
    shoot(browser, "3-decision-inspector")

    # the listening panel: audio elements whose sources are WAV files
    tab(browser, "listening")
    audio = wait_for(lambda: browser.find_elements("css selector", "#listening audio"), "audio elements")
    src = audio[0].get_attribute("src")
    request = urllib.request.Request(src, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        wav = response.read()
    assert response.headers["Content-Type"] == "audio/wav" and wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert len(audio) == 12
    panels = browser.find_elements("css selector", "#listening img.tts")  # target vs predicted mel, gate
    assert panels and all(browser.execute_script("return arguments[0].naturalWidth", p) > 0 for p in panels)
    shoot(browser, "4-listening")

    # the schedule, exported as the page's own link downloads it (same cookie)
    tab(browser, "schedule")
    wait_for(lambda: browser.find_elements("css selector", "#schedule table"), "the schedule table")
    href = browser.find_element("id", "schedule-yaml").get_attribute("href")
    text = browser.execute_async_script(
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(arguments[1])", href
    )
    plan = yaml.safe_load(text)
    champion = [e.data for e in events if isinstance(e.data, m.ChampionPromoted)][-1]
    assert plan["champion"] == champion.segment_id
    replayed = {**plan["initial"]}
    for change in plan["changes"]:
        replayed.update(change["set"])
    assert replayed == dict(champion.hparams)
    shoot(browser, "5-schedule")
    tab(browser, "curves")
    grad = browser.find_elements("css selector", ".chart")[3]  # the gradient norm, from the training reports
    assert "no data" not in grad.text and grad.find_elements("css selector", "circle")
    for name in ("curves", "trials", "health"):
        tab(browser, name)
        time.sleep(0.3)
        shoot(browser, f"6-{name}")
    logs = browser.get_log("browser") if hasattr(browser, "get_log") else []
    assert not [entry for entry in logs if entry.get("level") == "SEVERE"], logs  # no script error, no refused asset
