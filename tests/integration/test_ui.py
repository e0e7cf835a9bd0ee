"""The MLflow UI in a real browser: two finished smoke runs open on the experiment's runs table
(not MLflow 3's GenAI overview), its chart view draws their conflict metrics, the run page draws
them too, and the end-of-run figure renders.

MLflow 3.17's UI opens an experiment in the browser's workflow type (sidebar switch "GenAI" |
"Model training", in localStorage, GenAI until switched; ``?workflowType=`` in the URL wins), not
by the experiment's ``mlflow.experimentKind`` tag: a fresh browser lands on the GenAI overview
from the experiment's bare URL. The link the framework prints at the end of a run
(:func:`framework.tracking.runs_view_url`) carries ``workflowType=machine_learning``.

Needs Debian's ``chromium`` and ``chromium-driver`` and the pinned selenium
(``scripts/browser_up.sh`` installs them); skips without them, fails instead under
``FRAMEWORK_REQUIRE_BROWSER=1``. ``FRAMEWORK_UI_SCREENSHOTS=DIR`` saves the pages as
``mlflow_ui_experiment.png`` (runs table), ``mlflow_ui_charts.png`` and ``mlflow_ui_run.png``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framework.tracking import runs_view_url

ROOT = Path(__file__).resolve().parents[2]
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
def finished_run(tmp_path_factory, mlflow_server):
    """Two finished smoke runs in an experiment of their own on the session's loopback ``mlflow
    server``; (base url, experiment id, the first run's id)."""
    reason = missing()
    if reason:
        if os.environ.get("FRAMEWORK_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    tmp_path = tmp_path_factory.mktemp("ui")
    url = mlflow_server.uri
    experiment_name = f"ui-{tmp_path.name}"  # the experiment's runs table must hold exactly these two runs
    outputs = []
    for seed in (0, 1):
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "FRAMEWORK_CHECKPOINT_DIR": str(tmp_path / f"ckpt{seed}")}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "framework.main",
                "experiment=smoke",
                "trainer.epochs=3",
                "trainer.progress=false",
                f"seed={seed}",
                f"tracking.experiment={experiment_name}",
                f"hydra.run.dir={tmp_path}/out{seed}",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    # the end of a run prints the link that opens the runs table
    link = runs_view_url(url, experiment.experiment_id)
    assert all(link in output for output in outputs), outputs[-1][-2000:]
    yield url, experiment.experiment_id, runs[0].info.run_id


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


RUN_NAMES = ("mmpareto-seed0", "mmpareto-seed1")
GENAI_TEXTS = ("Detect Issues", "Token Usage", "Tokens per Trace", "Latency")


def screenshot(driver, name: str) -> None:
    """Save the page under ``$FRAMEWORK_UI_SCREENSHOTS`` once every plot and image has settled."""
    folder = os.environ.get("FRAMEWORK_UI_SCREENSHOTS")
    if not folder:
        return
    from selenium.webdriver.common.by import By

    for close in driver.find_elements(By.CSS_SELECTOR, "[data-component-id='mlflow.assistant.chat_panel.close']"):
        close.click()  # the assistant's side panel covers a third of the page
    size = driver.get_window_size()
    driver.set_window_size(1500, 1000)  # a screen's height, not the test's tall window
    settled = "return document.readyState === 'complete' && !document.querySelector('.ant-skeleton, [class*=spinner]')"
    wait(driver, lambda d: d.execute_script(settled), timeout=30, message="the page did not settle")
    Path(folder).mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(Path(folder) / name))
    driver.set_window_size(size["width"], size["height"])


def fresh(driver, url: str) -> None:
    """A browser as a first-time user has it: no workflow type chosen (MLflow's default: GenAI)."""
    driver.get(f"{url}/health")
    driver.execute_script("window.localStorage.clear(); window.sessionStorage.clear();")


def body(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def runs_table(driver) -> bool:
    """The experiment's runs table shows both runs, in the model training view."""
    url = driver.current_url
    return "/runs" in url and "workflowType=genai" not in url and all(name in body(driver) for name in RUN_NAMES)


def assert_no_genai_view(driver) -> None:
    from selenium.webdriver.common.by import By

    url = driver.current_url
    assert "workflowType=genai" not in url and "/overview" not in url and "/traces" not in url, url
    text = body(driver)
    assert not [t for t in GENAI_TEXTS if t in text], text[:2000]
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-component-id^='mlflow.detect_issues']")


def test_the_printed_link_opens_the_runs_table_and_its_charts(finished_run, browser):
    from selenium.webdriver.common.by import By

    url, experiment_id, _ = finished_run
    fresh(browser, url)
    browser.get(runs_view_url(url, experiment_id))
    wait(browser, runs_table, message="the runs table with both runs did not show")
    assert "workflowType=machine_learning" in browser.current_url
    assert_no_genai_view(browser)
    screenshot(browser, "mlflow_ui_experiment.png")

    # the chart view, as a user gets to it: the "chart" toggle above the runs, then the chart search
    browser.find_element(By.CSS_SELECTOR, "input[value='CHART']").find_element(By.XPATH, "ancestor::label[1]").click()
    wait(browser, lambda d: "compareRunsMode=CHART" in d.current_url, message="the chart view did not open")
    wanted = ["grad/encoder.strong/cos/multimodal.strong", "grad/encoder.weak/cos/multimodal.weak"]

    def drawn(driver):
        search = driver.find_elements(By.CSS_SELECTOR, "input[placeholder='Search metric charts']")
        if not search:
            return False
        if search[0].get_attribute("value") != "/cos/":
            search[0].clear()
            search[0].send_keys("/cos/")
        titles = driver.execute_script(DRAWN_CHARTS)
        return titles if all(name in body(driver) for name in wanted) and len(titles) >= 2 else False

    titles = wait(browser, drawn, message="no drawn charts of the gradient cosines")
    assert len(titles) >= 2, titles
    assert all(name in body(browser) for name in RUN_NAMES)  # the runs' legend beside the charts
    assert_no_genai_view(browser)
    screenshot(browser, "mlflow_ui_charts.png")


def test_the_experiments_list_opens_the_experiment_on_its_runs(finished_run, browser):
    from selenium.webdriver.common.by import By

    url, experiment_id, _ = finished_run
    experiment_link = f"a[href$='#/experiments/{experiment_id}']"
    # MLflow 3.17.2 ignores the experiment's kind tag: a first-time browser gets the GenAI overview
    # from the experiment's bare URL. If this changes with a new MLflow, the printed link and the
    # README's "switch to Model training" step can go.
    fresh(browser, url)
    browser.get(f"{url}/#/experiments/{experiment_id}")
    wait(browser, lambda d: "workflowType=genai" in d.current_url, message="MLflow now honours the kind tag")
    # the user's way: the experiments list, the sidebar's "Model training" switch (kept in the
    # browser), then a click on the experiment's name
    fresh(browser, url)
    browser.get(f"{url}/#/experiments")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, experiment_link), message="no experiment in the list")
    switch = "//aside//*[normalize-space(text())='Model training']"  # the sidebar's GenAI | Model training
    browser.find_element(By.XPATH, switch).click()
    wait(
        browser,
        lambda d: d.execute_script("return localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"',
    )
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, experiment_link), message="no experiment in the list")
    browser.find_element(By.CSS_SELECTOR, experiment_link).click()
    wait(browser, runs_table, message="clicking the experiment did not open its runs table")
    assert_no_genai_view(browser)
    # and from then on the experiment's own URL opens the runs table too
    browser.get(f"{url}/#/experiments/{experiment_id}")
    wait(browser, runs_table, message="the experiment's URL did not open its runs table")
    assert_no_genai_view(browser)


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
    loading = browser.find_elements(By.CSS_SELECTOR, "[data-testid*='skeleton'], .ant-skeleton")
    assert len(titles) >= 2, (titles, len(loading))
    screenshot(browser, "mlflow_ui_run.png")


def test_the_end_of_run_figure_renders(finished_run, browser):
    url, experiment_id, run_id = finished_run
    browser.get(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/figures/grad_encoder.strong.png")
    rendered = """
    return [...document.querySelectorAll('img')]
      .filter(i => i.complete && i.naturalWidth > 300 && i.naturalHeight > 100)
      .map(i => [i.naturalWidth, i.naturalHeight]);"""
    images = wait(browser, lambda d: d.execute_script(rendered) or False, message="the figure did not render")
    assert images[0][0] > images[0][1], "the three-panel figure is wider than tall"
