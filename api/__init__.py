"""The mlqueue REST API: `create_app(settings)` builds a flask-openapi3 app with one blueprint per resource.

The API process stays light: it imports no torch, scikit-learn, pandas or numpy, never imports `worker.tasks`,
and of `training` only the stdlib modules errors, params, optimize_params and registry (a test checks
sys.modules).
"""

from __future__ import annotations

import redis
from celery import Celery
from flask import Response, request
from flask_openapi3 import Info, OpenAPI
from redis.backoff import NoBackoff
from redis.retry import Retry

from api import (
    algorithms,
    batch,
    datasets,
    drift,
    events,
    health,
    jobs,
    model_routes,
    oip,
    optimize,
    predict,
    search,
    serving,
    ui,
)
from api import model_upload as model_upload
from api.auth import init_auth
from api.csrf import init_csrf
from api.drift_metrics import DriftCollector
from api.hosts import init_hosts
from api.hub import EventHub
from api.metrics import make_metrics
from api.parsing import FastJSON, check_json_body
from api.problems import register_error_handlers, validation_error_response
from api.schemas import Problem as ProblemModel
from api.services import Services
from api.wait_slots import WaitSlots
from api.waits import client_socket
from store import redis_url
from store.backends import dataset_store, model_registry
from store.celery_config import make_celery
from store.fair import FairQueues
from store.jobs import JobStore
from store.settings import Settings

REDIS_TIMEOUT_S = 2.0
# Requests borrow a connection for one command or pipeline and give it back; waiting requests hold none (api/hub.py).
# A bounded pool makes a burst of thousands of greenlets queue for a connection instead of opening thousands; in a
# burst the queue is as long as the process's CPU makes it (2,000 arriving waits took ~6 s on one core), so a
# request waits up to POOL_WAIT_S for a connection before it is a 503.
REDIS_POOL_SIZE = 128
POOL_WAIT_S = 20.0
MULTIPART_OVERHEAD = 1 << 20  # boundaries and part headers around the CSV itself
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}


def publisher(celery: Celery) -> Celery:
    """Tune the API's Celery app for publishing only: fail fast when Redis is down instead of blocking.

    Celery's defaults retry a publish for ~0.6 s and reconnect for seconds; a request would hang. One quick
    retry is kept: it replaces a pooled connection that broke while Redis restarted. (The API sends with
    ignore_result=True too: the result backend's own reconnect loop blocks ~19 s and then breaks for good.)
    """
    celery.conf.broker_connection_timeout = REDIS_TIMEOUT_S
    celery.conf.broker_transport_options = {
        **celery.conf.broker_transport_options,
        "socket_timeout": REDIS_TIMEOUT_S,
        "socket_connect_timeout": REDIS_TIMEOUT_S,
    }
    celery.conf.task_publish_retry_policy = PUBLISH_RETRY
    return celery


def create_app(settings: Settings | None = None) -> OpenAPI:
    """Build the API for `settings` (default: `Settings.from_env()`, read here, at the process edge)."""
    settings = settings or Settings.from_env()
    app = OpenAPI(
        __name__,
        info=Info(title="mlqueue", version="1.0.0", description="Async job backend for machine learning"),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        validation_error_status=422,
        validation_error_model=ProblemModel,
        validation_error_callback=validation_error_response,
        doc_ui=False,
    )
    # Uploads are streamed and counted by DatasetStore; this bound also stops any other oversized body early.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_mb * 1024 * 1024 + MULTIPART_OVERHEAD
    app.json = FastJSON(app)
    app.json.sort_keys = False

    # One immediate retry on a connection error replaces a connection that broke while Redis restarted; a Redis
    # that is down refuses at once, so a request still fails (503) in milliseconds, a hung one within 2 s.
    client = redis_url.pool_client(
        settings.redis_url,
        max_connections=REDIS_POOL_SIZE,
        timeout=POOL_WAIT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        health_check_interval=30,
        decode_responses=True,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )
    job_store = JobStore(client, ttl_s=settings.job_ttl_s)
    scraped, http_requests, gauges = make_metrics(job_store, settings.secret_key)
    app.extensions["mlq"] = Services(
        # On MLQ_HOME, or on the artifact store MLQ_ARTIFACTS names (then this replica keeps no uploads).
        settings=settings,
        redis=client,
        jobs=job_store,
        datasets=dataset_store(settings),
        registry=model_registry(settings, lambda: client),
        celery=publisher(make_celery(settings)),
        hub=EventHub(settings.redis_url),
        waits=WaitSlots(settings.max_waits, settings.max_waits_per_tenant, gauges),
        fair=FairQueues(client, settings.tenant_weights, settings.max_running_per_tenant),
    )
    app.extensions["mlq_metrics"] = scraped
    scraped.register(DriftCollector(lambda: client, lambda: app.extensions["mlq"].registry))  # drift gauges

    init_hosts(app, settings)  # first: a rebound page's request is refused before anything else looks at it
    init_csrf(app)  # before auth: a forged request is refused whatever its credentials
    init_auth(app, settings)

    @app.before_request
    def bound_client_io() -> None:
        # A client that sends (or reads) nothing for this long is cut off: a slow body or a stalled reader
        # holds its greenlet no longer than this. (Headers: gunicorn's keepalive timeout, api/gunicorn_conf.py.)
        sock = client_socket()
        if sock is not None:
            sock.settimeout(settings.client_timeout_s)

    app.before_request(check_json_body)
    register_error_handlers(app)

    @app.after_request
    def count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        http_requests.labels(request.method, route, str(response.status_code)).inc()
        return response

    for module in (health, datasets, jobs, events, model_routes, predict, batch, search, optimize, algorithms):
        app.register_api(module.bp)
    app.register_api(drift.bp)  # beside the model routes: GET /v1/models/{name}/versions/{v}/drift
    app.register_api(model_upload.bp)  # POST /v1/models/{name}/versions: bring your own ONNX model
    from api import rollouts, traffic  # alias traffic, live figures, rollouts (issue 19); own line: fewer conflicts

    app.register_api(traffic.bp)
    app.register_api(rollouts.bp)
    app.register_api(serving.bp)  # PUT /v1/models/{name}/serving
    app.register_api(oip.bp)  # the Open Inference Protocol's /v2, beside /v1
    app.register_blueprint(ui.bp)  # the dashboard's static files: not part of the OpenAPI document
    return app
