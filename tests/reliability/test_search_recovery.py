"""A search outlives a worker killed in the middle of one of its trials: the trial resumes like any training.

Real `celery worker` subprocesses on a private Redis; the search is submitted through the API (Flask test client
on the same settings) and the worker is SIGKILLed the way a machine dies.
"""

from __future__ import annotations

import pytest
from reliability_support import ChaosHarness, WorkerFleet, dump, running_at_epoch

from api import create_app
from store.contract import TRAIN_QUEUE

pytestmark = pytest.mark.integration

# ~40 ms an epoch on one CPU thread: a few seconds per trial, checkpointed every epoch.
LONG = {"epochs": 60, "hidden_layers": [16], "batch_size": 4, "early_stopping_patience": 0}


@pytest.mark.slow
def test_a_trial_whose_worker_was_killed_resumes_and_the_search_registers_once(
    harness: ChaosHarness, fleet: WorkerFleet
) -> None:
    api = create_app(harness.settings).test_client()
    first = fleet.start([TRAIN_QUEUE])
    response = api.post(
        "/v1/jobs/search",
        json={
            "model": "bc-search-killed",
            "dataset": harness.dataset("breast_cancer"),
            "target": "diagnosis",
            "algorithm": "mlp",
            "params": LONG,
            "search": {"lr": [0.01, 0.001]},
            "device": "cpu",
        },
    )
    assert response.status_code == 202, response.get_json()
    search_id = response.get_json()["id"]
    trial_ids = [t["id"] for t in harness.jobs.get(search_id)["request"]["trials"]]  # type: ignore[index]
    killed = next(iter(trial_ids))
    harness.wait_for(killed, running_at_epoch(5), what="trial 0 at epoch 5 on the first worker")
    fleet.kill(first)

    second = fleet.start([TRAIN_QUEUE])
    search = harness.wait(search_id)
    assert search["status"] == "succeeded", dump(search) + second.log_tail()
    trial = harness.jobs.get(killed)
    assert trial is not None and trial["status"] == "succeeded" and trial["attempts"] == 2, dump(trial)
    assert [t["status"] for t in search["result"]["trials"]] == ["succeeded", "succeeded"]
    versions = harness.versions("bc-search-killed")
    assert [v["job_id"] for v in versions] == [search_id]
