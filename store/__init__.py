"""The Redis side of mlqueue, shared by the API and the workers: torch-free by contract (import-linter, `make lint`).

Job records and their Lua transitions (jobs, job_scripts, job_events, job_cursor), job statuses, types and the
table of their transitions (job_states), training-attempt leases (leases), worker liveness, the online-inference
stream (inference_queue), ids, datasets' metadata and files (datasets), batch outputs (outputs, batch_format), the
queue contract (contract: queue and task names, messages), settings, and the Celery client configuration
(celery_config, kombu_transport). The worker processes' side (tasks, training hooks, the inference consumer, the
model cache, the launcher) is `worker/`.
"""
