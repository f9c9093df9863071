"""The report in a real browser: headless Chromium (Debian chromium, chromium-driver), Selenium.

The page must load from disk with no console errors and no network requests, every image must
decode with a non-zero natural size, the findings must come before the plots, and a full-page
screenshot is saved under test-artifacts/ at the repo root.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import babysit
from babysit.report.html import write_report

from .study_dirs import TRIALS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)

# not the network: inline images, and Chromium's own pages should any start late
BROWSER_INTERNAL = ("data:", "chrome://", "chrome-untrusted://", "about:")

pytestmark = pytest.mark.slow


def _chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, javascript: bool) -> Any:
    """A fresh headless Chromium with browser and performance logs."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(
            f"{CHROMIUM} or {CHROMEDRIVER} not found: install the Debian packages "
            "chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    if not javascript:  # the page's own scripts are off (the driver still inspects it)
        setting = {"profile.managed_default_content_settings.javascript": 2}
        options.add_experimental_option("prefs", setting)
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Chromium, given back after the test."""
    driver = _chromium(tmp_path, monkeypatch, javascript=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser_without_js(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Chromium with JavaScript disabled for pages."""
    driver = _chromium(tmp_path, monkeypatch, javascript=False)
    try:
        yield driver
    finally:
        driver.quit()


def _requests(driver: Any, page_url: str) -> list[str]:
    """URLs Chromium asked the network for (performance log), other than the page and data:."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if url != page_url and not url.startswith(BROWSER_INTERNAL):
                urls.append(url)
    return urls


def _check_report_in_browser(
    driver: Any, report: Path, artifact: str, *, first: str = "findings"
) -> dict[str, Any]:
    """Load the page; check errors, requests, images, that ``first`` leads; screenshot it."""
    url = report.as_uri()
    driver.get_log("performance")  # drop the browser's own start-up traffic (its new-tab page)
    driver.get(url)
    state = driver.execute_script(
        """
        const imgs = Array.from(document.images);
        const findings = document.getElementById(arguments[0]);
        const firstImg = imgs.length ? imgs[0] : null;
        return {
          ready: document.readyState,
          images: imgs.map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                                  alt: i.alt})),
          resources: performance.getEntriesByType('resource').map(e => e.name),
          sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
          codes: Array.from(document.querySelectorAll('#findings .finding code'))
                   .map(c => c.textContent),
          findingsBeforeImages: firstImg === null ||
            !!(findings.compareDocumentPosition(firstImg) & Node.DOCUMENT_POSITION_FOLLOWING),
          findingsTop: findings.getBoundingClientRect().top + window.scrollY,
          firstImgTop: firstImg ? firstImg.getBoundingClientRect().top + window.scrollY : null,
        };
        """,
        first,
    )
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert state["ready"] == "complete"
    assert errors == [], f"console errors: {errors}"
    assert state["resources"] == [], f"network resources: {state['resources']}"
    assert _requests(driver, url) == []
    broken = [i for i in state["images"] if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert state["images"] and broken == [], f"images that did not decode: {broken}"
    assert state["sections"][0] == first and state["findingsBeforeImages"]
    assert state["firstImgTop"] is None or state["findingsTop"] < state["firstImgTop"]

    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / artifact
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return state


def test_report_of_a_short_training_run_in_chromium(
    browser: Any, full_run: Path, tmp_path: Path, findings: list[dict[str, Any]]
) -> None:
    run = Path(shutil.copytree(full_run, tmp_path / "run"))
    state = _check_report_in_browser(browser, write_report(run), "report-run.png")
    assert len(state["images"]) == len(list((run / "plots").glob("*.png"))) == 9
    assert state["codes"] == [f["code"] for f in findings]  # the monitor's order, kept


def test_report_of_a_user_loop_in_chromium(
    browser: Any, tmp_path: Path, make_run: Callable[..., Path]
) -> None:
    run = make_run(tmp_path / "loop", epochs=2, extras=False)
    state = _check_report_in_browser(browser, write_report(run), "report-user-loop.png")
    assert len(state["images"]) == 3  # loss, accuracy, schedule; the rest say what is missing


def test_report_of_a_babysit_train_run_in_chromium(browser: Any, tmp_path: Path) -> None:
    config = {
        "task": {"name": "digits-mlp"},
        "optim": {"rule": "momentum", "lr": 0.05},
        "train": {"epochs": 2, "batch_size": 64, "seed": 0, "sanity": True, "gradcheck": True},
    }
    run = babysit.train(config, out=tmp_path / "trained", quiet=True)
    state = _check_report_in_browser(browser, write_report(run.dir), "report-trained.png")
    assert len(state["images"]) == len(list((run.dir / "plots").glob("*.png"))) >= 1
    for name in ("gradcheck", "sanity"):  # the trainer saved both reports; the page shows them
        assert (run.dir / f"{name}.json").is_file(), name
        assert browser.find_elements("css selector", f"#{name} table"), name


STUDY_SECTIONS = ["best", "trials", "scores", "stages", "curves", "pbt", "ensemble"]
ENSEMBLE = {
    "members": [
        {"path": "trials/s1-9", "val_acc": 0.93, "test_acc": 0.92},
        {"path": "trials/s1-8", "val_acc": 0.91, "test_acc": 0.90},
        {"path": "trials/s1-11", "val_acc": 0.88, "test_acc": 0.89},
    ],
    "ensemble": {"val_acc": 0.95, "test_acc": 0.94, "val_loss": 0.2, "test_loss": 0.22},
    "by_size": [
        {"size": 1, "val_acc": 0.93, "test_acc": 0.92},
        {"size": 2, "val_acc": 0.94, "test_acc": 0.93},
        {"size": 3, "val_acc": 0.95, "test_acc": 0.94},
    ],
}


def test_study_report_of_a_real_search_in_chromium(
    browser: Any, searched_study: Path, tmp_path: Path
) -> None:
    study = Path(shutil.copytree(searched_study, tmp_path / "study"))
    state = _check_report_in_browser(browser, write_report(study), "report-study.png", first="best")
    assert state["sections"] == STUDY_SECTIONS
    assert len(state["images"]) == len(list((study / "plots").glob("*.png"))) == 2
    rows = browser.find_elements("css selector", "#trials tbody tr")
    assert len(rows) == len(json.loads((study / "summary.json").read_text())["trials"])


def test_study_report_with_every_trial_state_in_chromium(
    browser: Any, synthetic_study: Path
) -> None:
    (synthetic_study / "ensemble.json").write_text(json.dumps(ENSEMBLE), encoding="utf-8")
    report = write_report(synthetic_study)
    state = _check_report_in_browser(browser, report, "report-study-states.png", first="best")
    assert state["sections"] == STUDY_SECTIONS and len(state["images"]) == 3
    assert browser.find_elements("css selector", "#best .finding.sev-warning")
    for cls in ("diverged", "pruned", "failed", "best"):
        assert browser.find_elements("css selector", f"#trials tr.{cls}"), cls


def test_study_report_works_with_javascript_disabled(
    browser_without_js: Any, synthetic_study: Path, tmp_path: Path
) -> None:
    driver = browser_without_js
    probe = tmp_path / "probe.html"
    probe.write_text('<p>x</p><noscript><p id="off">scripts are off</p></noscript>')
    driver.get(probe.as_uri())
    assert driver.find_element("css selector", "#off").is_displayed()  # the setting took
    driver.get(write_report(synthetic_study).as_uri())
    sections = [s.get_attribute("id") for s in driver.find_elements("css selector", "section")]
    assert sections == STUDY_SECTIONS
    images = driver.find_elements("css selector", "img")
    assert len(images) == 2
    assert all(i.get_property("complete") and i.get_property("naturalWidth") > 0 for i in images)
    assert len(driver.find_elements("css selector", "#trials tbody tr")) == len(TRIALS)
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


@pytest.mark.xdist_group("fast_demo")  # the same demo run as tests/demo (make test: loadgroup)
def test_demo_report_in_chromium(browser: Any, fast_demo: tuple[Path, int, str]) -> None:
    out, code, output = fast_demo
    assert code == 0, output
    state = _check_report_in_browser(
        browser, out / "report.html", "report-demo.png", first="summary"
    )
    assert state["sections"] == ["summary", "gradcheck", "sanity", "search", "train", "ensemble"]
    for section in ("gradcheck", "sanity", "search", "ensemble"):
        assert browser.find_elements("css selector", f"#{section} table"), section
    for sub in ("study", "final", "ensemble"):  # each step's own page, linked and present
        link = browser.find_element("css selector", f'a[href="{sub}/report.html"]')
        assert Path(link.get_attribute("href").removeprefix("file://")).is_file()
