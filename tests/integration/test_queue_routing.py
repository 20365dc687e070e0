"""Messages land on exactly the queue they are sent to, in a real Redis broker."""

from __future__ import annotations

import json

import redis

from store.celery_config import make_celery
from store.contract import INFERENCE_QUEUE, TRAIN_QUEUE, TRAIN_TASK
from store.settings import Settings


def test_a_train_message_reaches_the_train_queue_and_no_other(redis_url: str, redis_client: redis.Redis) -> None:
    app = make_celery(Settings(redis_url=redis_url))
    app.send_task(TRAIN_TASK, args=[{"job_id": "job_x"}], task_id="job_x", queue=TRAIN_QUEUE)
    # Declare the queues as a worker consuming both does; the bindings it writes must not overlap.
    with app.connection_for_write() as conn:
        for queue in app.amqp.queues.values():
            queue.bind(conn.default_channel).declare()
    app.send_task(TRAIN_TASK, args=[{"job_id": "job_y"}], task_id="job_y", queue=TRAIN_QUEUE)
    assert redis_client.llen(INFERENCE_QUEUE) == 0
    messages = [json.loads(m) for m in redis_client.lrange(TRAIN_QUEUE, 0, -1)]
    assert sorted(m["headers"]["id"] for m in messages) == ["job_x", "job_y"]
    assert {m["content-type"] for m in messages} == {"application/json"}
    bound = {str(b).split("\x06\x16")[-1] for b in redis_client.smembers(f"_kombu.binding.{TRAIN_QUEUE}")}
    assert bound == {TRAIN_QUEUE}
