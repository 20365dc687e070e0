"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright, against a real API
under gunicorn and a real train worker.

Skipped when Playwright or Chromium is missing, failing instead under CI=true (.ci/run installs both). Set
MLQ_SCREENSHOTS=docs/img to write the README's screenshots (1280x800) while the tests run.

Every wait is Playwright's own (expect / wait_for_function with a deadline); nothing sleeps, nothing is timed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from api_support import ALICE, BOB, IRIS_CSV, TOKENS, register_model
from failure_report import call_failed
from job_harness import breast_cancer_csv, iris_csv
from polling import wait_until

from mlqueue.dev import descendants
from store import keys
from store.drift_counts import DriftCounts
from store.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))
from api_reliability_support import gunicorn, token_env  # noqa: E402

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("MLQ_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
WAIT_MS = 90_000  # a deadline for slow CI machines, not a timing assertion
VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = os.environ.get("MLQ_SCREENSHOTS")


def _require_browser() -> None:
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright)")
    if CHROMIUM is None or not Path(CHROMIUM).is_file():
        missing.append(
            f"a chromium binary ({CHROMIUM or 'none on the PATH'}; apt-get install chromium, or set "
            "MLQ_CHROMIUM to one)"
        )
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module", autouse=True)
def browser_available() -> None:
    """Autouse, so a machine without a browser skips before any worker or API is started for nothing."""
    _require_browser()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def worker(mlq_settings: Settings, start_worker: Any) -> Any:
    return start_worker(["train", "batch"])  # one process for both: a second would cost a core's worth of start-up


API_LOGS: list[Path] = []


def _api(settings: Settings, log: Path, **env: str) -> Any:
    API_LOGS.append(log)
    return gunicorn({"MLQ_REDIS_URL": settings.redis_url, "MLQ_HOME": str(settings.home), **env}, log)


@pytest.fixture(autouse=True)
def explain_a_failure(request: pytest.FixtureRequest, mlq_settings: Settings, worker: Any) -> Iterator[None]:
    """On a failure, print what the page cannot show: each job as Redis has it, the worker's and the API's logs."""
    yield
    if not call_failed(request):
        return
    client = redis.Redis.from_url(mlq_settings.redis_url, decode_responses=True)
    for key in sorted(client.scan_iter(keys.job("*"))):
        if client.type(key) != "hash":
            continue
        record = client.hmget(key, "id", "status", "attempts", "worker", "progress", "started_at", "finished_at")
        job_id = str(record[0] or "")
        print(f"job {record} cancel flag: {client.exists(keys.job_cancel(job_id))}")
        job_log = keys.job_log(job_id)
        print(f"  log: {client.xlen(job_log)} events, last: {client.xrevrange(job_log, count=2)}")
    client.close()
    print(f"--- worker log (tail) ---\n{worker.log_tail(8000)}")
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy:  # where each of the worker's processes is, when py-spy is installed (it is not a dependency)
        for pid in [worker.proc.pid, *descendants(worker.proc.pid)]:
            dump = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, check=False)
            print(f"--- py-spy dump {pid} ---\n{dump.stdout}{dump.stderr}")
    for log in API_LOGS:
        print(f"--- {log} (tail) ---\n{log.read_text(errors='replace')[-6000:]}")


@pytest.fixture(scope="module")
def api(mlq_settings: Settings, worker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _api(mlq_settings, tmp_path_factory.mktemp("api") / "gunicorn.log") as base:
        yield base


@pytest.fixture(scope="module")
def auth_api(mlq_settings: Settings, worker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _api(
        mlq_settings, tmp_path_factory.mktemp("auth-api") / "gunicorn.log", MLQ_AUTH_TOKENS=token_env(TOKENS)
    ) as base:
        yield base


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Unhandled promise rejections land on the console. "Failed to load resource" is the browser noting an HTTP
    # error status, which the pages expect and show (a 503 /readyz without an inference worker, a 422 form).
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.set_default_timeout(WAIT_MS)
    # What the browser saw of the network, printed when the test fails.
    page.on("requestfailed", lambda req: print(f"request failed: {req.method} {req.url}: {req.failure}"))
    page.on("response", lambda res: print(f"response: {res.status} {res.request.method} {res.url}"))
    page.on("console", lambda msg: print(f"console {msg.type}: {msg.text}"))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=WAIT_MS)  # its own default (5 s) is shorter than a busy CI machine's epoch
    return pw_expect(locator)


def screenshot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name))


def upload(api: str, csv: bytes, name: str, headers: dict[str, str] | None = None) -> str:
    response = httpx.post(
        f"{api}/v1/datasets?name={name}", content=csv, headers={**(headers or {}), "Content-Type": "text/csv"}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def train_mlp(api: str, dataset: str, model: str, epochs: int) -> str:
    # Batches of 4 rows make each epoch long enough to watch: the worker publishes a point per epoch.
    body = {
        "model": model,
        "dataset": dataset,
        "target": "diagnosis",
        "algorithm": "mlp",
        "params": {"epochs": epochs, "batch_size": 4, "hidden_layers": [32], "early_stopping_patience": 0},
    }
    response = httpx.post(f"{api}/v1/jobs/train", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def loss_points(page: Any) -> int:
    return int(page.locator('#curves path[data-series="loss"]').get_attribute("data-points") or 0)


def test_a_training_appears_in_the_table_and_its_loss_curve_grows_until_it_succeeds(api: str, page: Any) -> None:
    dataset = upload(api, breast_cancer_csv(), "cancer")
    page.goto(f"{api}/")  # redirects to /ui/
    expect(page.locator("#jobs-table")).to_be_visible()
    expect(page.locator('[data-queue="train"]')).to_contain_text("1 worker")

    job_id = train_mlp(api, dataset, "live", epochs=40)  # seconds of epochs: time to open its page
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_be_visible()  # from the event stream: the page was not reloaded
    expect(row).to_have_attribute("data-status", "running")
    screenshot(page, "jobs.png")

    row.locator("a").first.click()
    expect(page.locator('#curves path[data-series="loss"]')).to_be_attached()
    expect(page.locator(".page-head .status")).to_have_text("running")
    seen = loss_points(page)
    # New epochs arrive over the job's event stream and extend the drawn curve while the job still runs.
    page.wait_for_function(
        "n => Number(document.querySelector('#curves path[data-series=\"loss\"]')?.dataset.points) > n", arg=seen
    )
    expect(page.locator('#curves path[data-series="val_loss"]')).to_be_attached()
    screenshot(page, "training.png")
    expect(page.locator(".page-head .status")).to_have_text("succeeded")
    finished = httpx.get(f"{api}/v1/jobs/{job_id}").json()
    assert loss_points(page) == finished["result"]["epochs_run"] == 40, finished
    expect(page.locator('[data-metric="accuracy"]')).to_be_visible()
    expect(page.locator("svg.heatmap rect")).to_have_count(4)  # two classes

    # The version it registered: manifest, features, importances, and the artifact as a download.
    page.locator(".job-body a", has_text="live version 1").click()
    expect(page.locator("#features tr")).to_have_count(8)
    expect(page.locator("svg.bars:not(.drift) rect.bar")).to_have_count(8)
    with page.expect_download() as download:
        page.locator("#download-artifact").click()
    assert download.value.suggested_filename == "live-v1.tar.gz"


# A cancel lands within milliseconds of its cancel_requested event, so the page's re-read of the job that this event
# starts, and the cancel's own answer, may leave before the job ends and arrive after its final event; CI once saw a
# cancelled job stay "running" in the table that way. This script holds the answers about one job (GET /v1/jobs/{id},
# POST .../cancel) asked after window.__hold() until window.__release(), so the test decides what arrives first.
# __held counts the answers held; __parsed those the page has read after the release (its handlers then ran).
HELD_JOB_ANSWERS = """
(() => {
  const fetchNow = window.fetch;
  let holding = false;
  let release = () => {};
  let released = Promise.resolve();
  Object.assign(window, {
    __held: 0,
    __parsed: 0,
    __hold() {
      holding = true;
      window.__held = window.__parsed = 0;
      released = new Promise((resolve) => { release = resolve; });
    },
    __release() { holding = false; release(); },
  });
  window.fetch = async (input, init) => {
    const path = new URL(typeof input === "string" ? input : input.url, location.href).pathname;
    const hold = holding && /^\\/v1\\/jobs\\/[^/]+(\\/cancel)?$/.test(path);  // asked after __hold()
    const response = await fetchNow(input, init);
    if (!hold) return response;
    window.__held += 1;
    await released;
    const json = response.json.bind(response);
    response.json = async () => { const body = await json(); window.__parsed += 1; return body; };
    return response;
  };
})();
"""


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The worker's pool process stopped (SIGSTOP): a cancel is flagged, but nothing acts on it until the block ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def cancel_with_answers_held(api: str, page: Any, pool_pid: int, job_id: str, button: Any) -> None:
    """Click `button` (a Cancel) while the worker is frozen and the answers about the job are held: the page's
    cancel answer and its re-read both say "running"; they arrive only after the worker has cancelled the job."""
    page.evaluate("() => window.__hold()")
    with frozen(pool_pid):
        button.click()
        page.locator("#confirm-ok").click()
        # The cancel's answer and the re-read cancel_requested started. A function, not an expression: Playwright
        # polls an expression with eval, which the dashboard's CSP (no unsafe-eval) refuses.
        page.wait_for_function("() => window.__held >= 2")
    wait_until(lambda: httpx.get(f"{api}/v1/jobs/{job_id}").json()["status"] == "cancelled", 60, what="the cancel")


def test_a_running_job_is_cancelled_from_the_table_and_from_its_page(api: str, page: Any, worker: Any) -> None:
    page.add_init_script(HELD_JOB_ANSWERS)
    pool_pid = int(worker.first_record["pid"])  # the pool process announces itself; it runs the trainings
    dataset = upload(api, breast_cancer_csv(), "cancer-long")
    job_id = train_mlp(api, dataset, "endless", epochs=1000)
    page.goto(f"{api}/ui/#/jobs")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_have_attribute("data-status", "running")
    # The worker column names the worker of the running attempt, as the job object does.
    job_worker = httpx.get(f"{api}/v1/jobs/{job_id}").json()["worker"]
    assert job_worker and "@" in job_worker
    expect(row.locator(".worker")).to_have_text(job_worker)
    cancel_with_answers_held(api, page, pool_pid, job_id, row.locator('[data-action="cancel"]'))
    # The final event shows at once; the answers that left before it ("running") must not undo it.
    expect(row).to_have_attribute("data-status", "cancelled")
    page.evaluate("() => window.__release()")
    page.wait_for_function("() => window.__parsed >= 2")
    expect(row).to_have_attribute("data-status", "cancelled")
    expect(row.locator('[data-action="cancel"]')).to_have_count(0)
    # The status filter keeps the row; another status hides it (the list is asked again with ?status=).
    page.locator('select[name="status"]').select_option("cancelled")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
    expect(row).to_be_visible()
    page.locator('select[name="status"]').select_option("succeeded")
    expect(page).to_have_url(f"{api}/ui/#/jobs?status=succeeded")
    expect(row).to_have_count(0)
    expect(page.locator('#jobs-table tbody tr[data-status="succeeded"]').first).to_be_visible()

    # The job's own page: its Cancel button, and the same race.
    job_id = train_mlp(api, dataset, "endless", epochs=1000)
    page.goto(f"{api}/ui/#/jobs/{job_id}")
    status = page.locator(".page-head .status")
    expect(status).to_have_text("running")
    cancel_with_answers_held(api, page, pool_pid, job_id, page.locator('.page-head [data-action="cancel"]'))
    expect(status).to_have_text("cancelled")
    page.evaluate("() => window.__release()")
    page.wait_for_function("() => window.__parsed >= 2")
    expect(status).to_have_text("cancelled")
    expect(page.locator('.page-head [data-action="cancel"]')).to_have_count(0)


def test_promoting_a_version_moves_the_alias(api: str, mlq_settings: Settings, page: Any) -> None:
    for accuracy in (0.91, 0.95):
        manifest = {
            "algorithm": "random_forest",
            "task": "classification",
            "features": [{"name": "x", "dtype": "number"}],
            "classes": ["a", "b"],
            "metrics": {"accuracy": accuracy, "f1": accuracy - 0.01},
        }
        register_model(mlq_settings, name="flowers", manifest=manifest)
    page.goto(f"{api}/ui/#/models/flowers")
    v1, v2 = page.locator('tr[data-version="1"]'), page.locator('tr[data-version="2"]')
    expect(v2.locator("td.best")).to_have_count(2)  # v2 is better on both metrics

    v1.locator('[data-action="promote"]').click()
    page.locator("#confirm-ok").click()
    expect(v1.locator('[data-alias="production"]')).to_be_visible()

    v2.locator('[data-action="promote"]').click()
    expect(page.locator("#confirm-text")).to_contain_text("points at version 1 now")
    page.locator("#confirm-ok").click()
    expect(v2.locator('[data-alias="production"]')).to_be_visible()
    expect(v1.locator('[data-alias="production"]')).to_have_count(0)
    screenshot(page, "models.png")
    aliases = httpx.get(f"{api}/v1/models/flowers").json()["aliases"]
    assert aliases == {"production": 2}
    # A split: the traffic panel shows the alias's versions side by side, with their live figures.
    split = httpx.put(f"{api}/v1/models/flowers/aliases/production", json={"versions": {"1": 90, "2": 10}})
    assert split.status_code == 200, split.text
    page.reload()
    panel = page.locator('#traffic-panel table[data-alias="production"]')
    expect(panel.locator('tr[data-version="1"]')).to_contain_text("90%")
    expect(panel.locator('tr[data-version="2"]')).to_contain_text("10%")
    expect(panel.locator('tr[data-version="2"] td.live-requests')).to_have_text("0")
    screenshot(page, "traffic.png")


def test_an_uploaded_onnx_version_shows_its_kind_inputs_and_outputs(
    api: str, mlq_settings: Settings, page: Any
) -> None:
    tensor = {"type": "int64", "shape": ["batch", "seq"]}
    manifest = {
        "algorithm": "onnx",
        "model_kind": "onnx",
        "task": "classification",
        "features": [{"name": "review", "dtype": "text"}],
        "classes": ["negative", "positive"],
        "source": {"kind": "upload", "file": "reviews.onnx"},
        "onnx": {
            "layout": "text",
            "inputs": [{"name": "input_ids", **tensor}, {"name": "attention_mask", **tensor}],
            "outputs": [{"name": "logits", "type": "float", "shape": [None, 2]}],
            "output": "logits",
            "output_kind": "logits",
            "opsets": {"ai.onnx": 17},
            "producer": "pytorch 2.13.0",
            "text": {"column": "review", "max_length": 32},
        },
    }
    register_model(mlq_settings, name="reviews", manifest=manifest)
    page.goto(f"{api}/ui/#/models/reviews/1")
    card = page.locator("#onnx")
    expect(page.locator("#onnx-inputs tbody tr")).to_have_count(2)
    expect(page.locator("#onnx-outputs tbody tr")).to_contain_text("[?, 2]")
    for text in ("onnx", "reviews.onnx", "[batch, seq]", "logits (logits)", 'column "review", up to 32 tokens'):
        expect(card).to_contain_text(text)


def test_a_csv_uploaded_with_the_file_input_or_dropped_is_listed_with_its_columns(
    api: str, page: Any, tmp_path: Path
) -> None:
    csv = tmp_path / "iris-upload.csv"
    csv.write_text(IRIS_CSV)
    page.goto(f"{api}/ui/#/datasets")
    expect(page.locator("#train-algorithm option")).to_have_count(6)  # the form comes from /v1/algorithms
    page.locator("#upload-file").set_input_files(str(csv))
    expect(page.locator("#upload-status")).to_contain_text("Uploaded iris-upload.csv: 12 rows, 5 columns")
    row = page.locator("#datasets-table tr", has_text="iris-upload.csv")
    expect(row).to_be_visible()
    row.locator("button.link").click()
    expect(page.locator("#datasets-table tr.details").first).to_contain_text("sepal_width")
    # Drag and drop: a file dropped on the zone is uploaded the same way.
    dropped = page.evaluate_handle(
        "text => { const dt = new DataTransfer(); "
        "dt.items.add(new File([text], 'dropped.csv', {type: 'text/csv'})); return dt; }",
        IRIS_CSV,
    )
    page.locator("#dropzone").dispatch_event("drop", {"dataTransfer": dropped})
    expect(page.locator("#upload-status")).to_contain_text("Uploaded dropped.csv: 12 rows")
    expect(page.locator("#datasets-table tr", has_text="dropped.csv")).to_be_visible()
    # The form was pointed at the new dataset: a bad parameter comes back as the API's 422, beside its field.
    page.locator("#train-model").fill("iris-ui")
    page.locator("#train-algorithm").select_option("logistic_regression")
    page.locator("#param-C").fill("-1")
    page.locator("#train-form button[type=submit]").click()
    expect(page.locator('[data-param="C"] .field-error')).to_contain_text("C must be")


def test_with_tokens_a_wrong_token_is_refused_and_tenants_see_only_their_own_jobs(auth_api: str, browser: Any) -> None:
    dataset = upload(auth_api, IRIS_CSV.encode(), "alice-iris", headers=ALICE)
    body = {"model": "alice-model", "dataset": dataset, "target": "species", "algorithm": "logistic_regression"}
    response = httpx.post(f"{auth_api}/v1/jobs/train", json=body, headers=ALICE)
    assert response.status_code == 202, response.text
    alice_job = response.json()["id"]
    assert httpx.get(f"{auth_api}/v1/jobs", headers=BOB).json()["items"] == []

    for token, sees_it in (("tok-bob", False), ("tok-alice", True)):
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{auth_api}/ui/")
        expect(page.locator("#token")).to_be_visible()
        page.locator("#token").fill("not-a-token")
        page.locator(".signin button").click()
        expect(page.locator("#token-error")).to_have_text("That token was refused.")
        page.locator("#token").fill(token)
        page.locator(".signin button").click()
        expect(page.locator("#jobs-table")).to_be_visible()
        rows = page.locator(f'tr[data-job="{alice_job}"]')
        if sees_it:
            expect(rows).to_have_count(1)
        else:
            expect(page.locator(".page.jobs p.muted")).to_be_visible()  # "No jobs yet"
            expect(rows).to_have_count(0)
        # The token is in this tab's sessionStorage only: never localStorage, never the URL.
        assert page.evaluate("localStorage.length") == 0
        assert token not in page.url
        context.close()


def test_a_failed_job_shows_its_error_and_a_search_its_trials_and_metric_chart(api: str, page: Any) -> None:
    # Every other row lacks `b`: with missing "drop" only 7 rows are left, which the worker refuses.
    holes = "a,b,y\n" + "".join(f"{i},{'' if i % 2 else i},{'x' if i % 3 else 'z'}\n" for i in range(14))
    dataset = upload(api, holes.encode(), "holes")
    body = {
        "model": "holes",
        "dataset": dataset,
        "target": "y",
        "algorithm": "random_forest",
        "preprocessing": {"missing": "drop"},
    }
    failed = httpx.post(f"{api}/v1/jobs/train", json=body).json()["id"]
    iris = upload(api, iris_csv(), "iris-search")
    search = {
        "model": "iris-search",
        "dataset": iris,
        "target": "species",
        "algorithm": "logistic_regression",
        "search": {"C": [0.1, 10.0]},
        "metric": "accuracy",
    }
    response = httpx.post(f"{api}/v1/jobs/search", json=search)
    assert response.status_code == 202, response.text

    page.goto(f"{api}/ui/#/jobs/{failed}")
    expect(page.locator(".page-head .status")).to_have_text("failed")
    expect(page.locator("#job-error")).to_contain_text("need at least 10")

    search_id = response.json()["id"]
    page.goto(f"{api}/ui/#/jobs/{search_id}")  # only the hash changes: wait for the new page, not the old one's badge
    expect(page.locator(".page-head h1")).to_contain_text(search_id)
    expect(page.locator(".page-head .status")).to_have_text(re.compile("succeeded|failed"))
    assert page.locator(".page-head .status").text_content() == "succeeded", page.locator("#job-error").text_content()
    expect(page.locator("#trials tbody tr")).to_have_count(2)
    expect(page.locator("figure.small-chart svg.scatter circle")).to_have_count(2)  # accuracy vs C
    expect(page.locator("figure.small-chart figcaption")).to_have_text("accuracy vs C")


def test_a_batch_prediction_shows_its_rows_and_downloads_its_output_and_an_optimisation_compares(
    api: str, page: Any
) -> None:
    dataset = upload(api, iris_csv(), "iris-batch")
    body = {
        "model": "iris-mlp",
        "dataset": dataset,
        "target": "species",
        "algorithm": "mlp",
        "params": {"epochs": 5, "hidden_layers": [8]},
    }
    trained = httpx.post(f"{api}/v1/jobs/train?wait=30", json=body, timeout=40).json()
    assert trained["status"] == "succeeded", trained
    batch = httpx.post(f"{api}/v1/models/iris-mlp/batch-predict", json={"version": 1, "dataset": dataset}).json()
    optimize = httpx.post(f"{api}/v1/models/iris-mlp/versions/1/optimize", json={"method": "quantize_dynamic"}).json()

    page.goto(f"{api}/ui/#/jobs/{batch['id']}")
    expect(page.locator(".page-head .status")).to_have_text("succeeded")
    expect(page.locator(".job-body")).to_contain_text("150 / 150")
    with page.expect_download() as download:
        page.locator("#download-output").click()
    assert download.value.suggested_filename.endswith(".csv")
    assert Path(download.value.path()).read_text().splitlines()[0].startswith("label,")

    page.goto(f"{api}/ui/#/jobs/{optimize['id']}")
    expect(page.locator(".page-head h1")).to_contain_text(optimize["id"])
    expect(page.locator(".page-head .status")).to_have_text("succeeded")
    expect(page.locator("#comparison")).to_contain_text("artifact")
    expect(page.locator("#comparison tbody tr").first).to_contain_text("1")  # parent version 1, child 2


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)], ids=["1280x800", "1920x1080"])
def test_the_pages_fit_the_window_with_whole_labels_and_a_log_axis_for_spread_parameters(
    api: str, browser: Any, size: tuple[int, int]
) -> None:
    width, height = size
    iris = upload(api, iris_csv(), f"iris-layout-{width}")
    body = {
        "model": f"iris-layout-{width}",
        "dataset": iris,
        "target": "species",
        "algorithm": "logistic_regression",
        "search": {"C": [0.2, 1.0, 5.0]},  # 25x apart: on a linear axis 0.2 and 1.0 would nearly touch
        "metric": "accuracy",
    }
    search = httpx.post(f"{api}/v1/jobs/search", json=body)
    assert search.status_code == 202, search.text
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    try:
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{api}/ui/#/jobs/{search.json()['id']}")
        expect(page.locator(".page-head .status")).to_have_text("succeeded")
        expect(page.locator("figure.small-chart svg.scatter circle")).to_have_count(3)
        xs = sorted(float(c.get_attribute("cx") or 0) for c in page.locator("svg.scatter circle").all())
        assert abs((xs[1] - xs[0]) - (xs[2] - xs[1])) < 2, xs  # equal steps: a log axis
        inside = page.evaluate(
            """() => [...document.querySelectorAll("svg.scatter circle")].every((c) => {
                 const box = c.getBoundingClientRect(); const svg = c.ownerSVGElement.getBoundingClientRect();
                 return box.top >= svg.top - 0.5 && box.bottom <= svg.bottom + 0.5; })"""
        )
        assert inside, "a point of the scatter is cut by the plot's edge"

        # A training's confusion matrix names every class whole.
        trained = httpx.post(
            f"{api}/v1/jobs/train?wait=60",
            json={
                "model": f"iris-cm-{width}",
                "dataset": iris,
                "target": "species",
                "algorithm": "logistic_regression",
            },
            timeout=70,
        ).json()
        assert trained["status"] == "succeeded", trained
        page.goto(f"{api}/ui/#/jobs/{trained['id']}")
        expect(page.locator("svg.heatmap")).to_be_visible()
        labels = page.locator("svg.heatmap text.col-label").all_text_contents()
        assert labels == ["setosa", "versicolor", "virginica"], labels
        clipped = page.evaluate(
            """() => [...document.querySelectorAll("svg.heatmap text")].filter((t) => {
                 const box = t.getBoundingClientRect(); const svg = t.ownerSVGElement.getBoundingClientRect();
                 return box.left < svg.left - 0.5 || box.right > svg.right + 0.5 || box.top < svg.top - 0.5;
               }).map((t) => t.textContent)"""
        )
        assert not clipped, f"labels cut by the heat map's edge: {clipped}"

        page.goto(f"{api}/ui/#/jobs")
        expect(page.locator("#jobs-table tbody tr").first).to_be_visible()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        columns = page.evaluate(
            "() => [...document.querySelectorAll('#jobs-table th')].map((th) => th.textContent + ':' + th.offsetWidth)"
        )
        assert overflow <= 0, f"the jobs page is {overflow} px wider than a {width} px window: {columns}"
        screenshot(page, "jobs.png") if width == 1280 else None

        page.goto(f"{api}/ui/#/datasets")
        expect(page.locator("label.field[data-param] small.hint").first).to_be_visible()
        hints = page.locator("small.hint").all_text_contents()
        assert not [h for h in hints if "None" in h or "'" in h], hints  # no Python repr in a form's hint
    finally:
        context.close()


def test_a_version_page_shows_drift_bars_and_flags_major_drift(api: str, mlq_settings: Settings, page: Any) -> None:
    reference = {
        "format": 1,
        "rows": 1000,
        "features": [
            {"name": "x", "kind": "number", "edges": [0.0, 1.0], "counts": [300, 400, 300, 0]},
            {"name": "site", "kind": "category", "categories": ["north", "south"], "counts": [600, 400, 0, 0]},
        ],
        "predictions": {"kind": "class", "classes": ["a", "b"], "counts": [100, 100], "rows": 200},
    }
    manifest = {
        "algorithm": "logistic_regression",
        "task": "classification",
        "features": [{"name": "x", "dtype": "number"}, {"name": "site", "dtype": "category"}],
        "classes": ["a", "b"],
        "drift_reference": reference,
    }
    register_model(mlq_settings, name="drifting", manifest=manifest)
    # The counts a worker would have written: "x" moved up (all in its last bin), "site" as in training.
    client = redis.Redis.from_url(mlq_settings.redis_url)
    with client.pipeline(transaction=False) as pipe:
        DriftCounts.add_in(
            pipe, "default", "drifting", 1, {"n": 200, "0.2": 200, "1.0": 120, "1.1": 80, "p.0": 100, "p.1": 100}
        )
        pipe.execute()
    client.close()
    page.goto(f"{api}/ui/#/models/drifting/1")
    expect(page.locator("#drift-major")).to_contain_text("x")
    expect(page.locator('#drift rect[data-feature="x"]')).to_have_attribute("data-level", "major")
    expect(page.locator('#drift rect[data-feature="site"]')).to_have_attribute("data-level", "none")
    expect(page.locator("#drift-major")).not_to_contain_text("site")
    screenshot(page, "drift.png")
