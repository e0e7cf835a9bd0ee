"""The MLflow UI in a real browser: a finished smoke run shows its conflict metrics as drawn
charts and its end-of-run figure renders.

Needs Debian's ``chromium`` and ``chromium-driver`` and the pinned selenium
(``scripts/browser_up.sh`` installs them); skips without them, fails instead under
``FRAMEWORK_REQUIRE_BROWSER=1``. ``FRAMEWORK_UI_SCREENSHOT=PATH`` saves the run's chart page.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = Path(sys.executable).with_name("mlflow")
pytestmark = pytest.mark.slow


def missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (scripts/browser_up.sh)"
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/browser_up.sh)"
    return None


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A loopback ``mlflow server`` with one finished smoke run; (base url, experiment id, run id)."""
    reason = missing()
    if reason:
        if os.environ.get("FRAMEWORK_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    tmp_path = tmp_path_factory.mktemp("ui")
    port = free_port()
    args = [
        str(MLFLOW),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--serve-artifacts",
        "--artifacts-destination",
        str(tmp_path / "art"),
    ]
    server = subprocess.Popen(
        args,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=(tmp_path / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(360):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.25)
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "FRAMEWORK_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "framework.main",
                "experiment=smoke",
                "trainer.epochs=3",
                "trainer.progress=false",
                f"hydra.run.dir={tmp_path}/out",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        from mlflow.tracking import MlflowClient

        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("smoke")
        [run] = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED"
        assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
        yield url, experiment.experiment_id, run.info.run_id
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--window-size=1500,2200",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def wait(driver, condition, timeout=120, message=""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition, message)


DRAWN_CHARTS = """
const found = [];
for (const plot of document.querySelectorAll('.js-plotly-plot')) {
  const card = plot.closest('[data-testid]') || plot.parentElement.parentElement.parentElement;
  const lines = plot.querySelectorAll(
    '.scatterlayer .trace path.js-line, .scatterlayer .trace .point, .barlayer .point');
  if (lines.length) found.push((card.innerText || '').split('\\n')[0]);
}
return found;
"""


def test_the_run_page_draws_the_conflict_metrics(finished_run, browser):
    from selenium.webdriver.common.by import By

    url, experiment_id, run_id = finished_run
    browser.get(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics")
    # the charts load lazily: wait until the conflict metrics' cards hold drawn plotly traces
    wanted = ["grad/encoder.strong/conflict_rate", "grad/encoder.strong/cos/multimodal.strong"]

    def drawn(driver):
        search = driver.find_elements(By.CSS_SELECTOR, "input[placeholder*='earch']")
        if search and search[0].get_attribute("value") != "grad/":
            search[0].clear()
            search[0].send_keys("grad/")
        titles = driver.execute_script(DRAWN_CHARTS)
        text = driver.find_element(By.TAG_NAME, "body").text
        return titles if all(name in text for name in wanted) and len(titles) >= 2 else False

    titles = wait(browser, drawn, message="no drawn charts of the conflict metrics")
    assert titles
    loading = browser.find_elements(By.CSS_SELECTOR, "[data-testid*='skeleton'], .ant-skeleton")
    screenshot = os.environ.get("FRAMEWORK_UI_SCREENSHOT")
    if screenshot:
        time.sleep(2)
        browser.save_screenshot(screenshot)
    assert len(titles) >= 2, (titles, len(loading))


def test_the_end_of_run_figure_renders(finished_run, browser):
    url, experiment_id, run_id = finished_run
    browser.get(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/figures/grad_encoder.strong.png")
    rendered = """
    return [...document.querySelectorAll('img')]
      .filter(i => i.complete && i.naturalWidth > 300 && i.naturalHeight > 100)
      .map(i => [i.naturalWidth, i.naturalHeight]);"""
    images = wait(browser, lambda d: d.execute_script(rendered) or False, message="the figure did not render")
    assert images[0][0] > images[0][1], "the three-panel figure is wider than tall"
