"""The launcher's plan: which worker processes start, on which device, with which command line."""

from __future__ import annotations

import sys

import pytest

from worker.launcher import LauncherError, plan, visible_gpus


def _option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_cpu_devices_start_one_cpu_worker_with_cuda_hidden() -> None:
    plans = plan("cpu", ["train", "inference"], concurrency=2, gpu_count=4)
    assert len(plans) == 1
    (worker,) = plans
    assert worker.env == {"CUDA_VISIBLE_DEVICES": ""}
    assert worker.hostname == "cpu@%h"
    assert worker.device == "cpu"
    assert worker.argv[:6] == [sys.executable, "-m", "celery", "-A", "worker.app", "worker"]
    assert _option(worker.argv, "-Q") == "train,inference"
    assert _option(worker.argv, "-n") == "cpu@%h"
    assert _option(worker.argv, "-P") == "prefork"
    assert _option(worker.argv, "-c") == "2"


def test_auto_without_a_gpu_falls_back_to_one_cpu_worker() -> None:
    plans = plan("auto", ["train"], concurrency=1, gpu_count=0)
    assert [(p.hostname, p.device, p.env["CUDA_VISIBLE_DEVICES"]) for p in plans] == [("train-cpu@%h", "cpu", "")]


def test_auto_with_gpus_starts_one_worker_per_gpu() -> None:
    plans = plan("auto", ["inference"], concurrency=1, gpu_count=3)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "1", "2"]
    assert [p.hostname for p in plans] == ["inference-gpu0@%h", "inference-gpu1@%h", "inference-gpu2@%h"]


def test_explicit_gpu_ids_pin_one_process_per_gpu() -> None:
    plans = plan("0,1", ["train", "inference"], concurrency=1, gpu_count=2)
    assert [p.env for p in plans] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert [p.hostname for p in plans] == ["gpu0@%h", "gpu1@%h"]
    assert [p.device for p in plans] == ["cuda:0", "cuda:1"]
    assert [_option(p.argv, "-n") for p in plans] == ["gpu0@%h", "gpu1@%h"]


def test_gpu_ids_that_are_not_visible_are_refused_with_the_visible_ones() -> None:
    with pytest.raises(LauncherError, match=r"GPU 2 is not visible.*visible GPUs: 0, 1"):
        plan("0,2", ["train"], concurrency=1, gpu_count=2)
    with pytest.raises(LauncherError, match="not visible"):
        plan("0", ["train"], concurrency=1, gpu_count=0)


def test_a_gpu_named_twice_is_refused() -> None:
    with pytest.raises(LauncherError, match="twice"):
        plan("0,0", ["train"], concurrency=1, gpu_count=1)


def test_several_cpu_workers_get_distinct_hostnames() -> None:
    plans = plan("cpu:3", ["inference"], concurrency=1)
    assert [p.hostname for p in plans] == ["inference-cpu@%h", "inference-cpu1@%h", "inference-cpu2@%h"]
    assert all(p.env == {"CUDA_VISIBLE_DEVICES": ""} for p in plans)


def test_every_worker_reserves_one_job_per_process() -> None:
    for queues in (["train", "inference"], ["train"], ["inference"]):
        (worker,) = plan("cpu", queues, concurrency=1)
        assert _option(worker.argv, "--prefetch-multiplier") == "1"


def test_a_train_and_an_inference_worker_on_one_machine_are_distinct_nodes() -> None:
    (train,) = plan("cpu", ["train"], concurrency=1)
    (inference,) = plan("cpu", ["inference"], concurrency=1)
    assert train.hostname == "train-cpu@%h" and inference.hostname == "inference-cpu@%h"
    (batch,) = plan("cpu", ["batch"], concurrency=1)
    assert batch.hostname == "batch-cpu@%h" and "-Q" in batch.argv and "batch" in batch.argv


def test_unknown_queues_and_zero_concurrency_are_refused() -> None:
    with pytest.raises(LauncherError, match="unknown queue.*infer.*queues are train, inference"):
        plan("cpu", ["infer"], concurrency=1)
    with pytest.raises(LauncherError, match="concurrency"):
        plan("cpu", ["train"], concurrency=0)
    with pytest.raises(LauncherError, match="cpu:N"):
        plan("cpu:0", ["train"], concurrency=1)


def test_an_existing_cuda_mask_is_what_is_visible() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]
