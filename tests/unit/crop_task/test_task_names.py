"""Task names are part of the wire contract: the API's producer app sends by name, with the workers' options,
and never loads the worker's app or its task modules."""

from __future__ import annotations

import subprocess
import sys

from worker import contracts
from worker.celery_app import app as worker_app
from worker.celery_app import make_celery
from worker.celery_config import producer_app
from worker.settings import Settings
from worker.webhooks import webhook_queue

SENTINEL_URL = "redis+sentinel://:pw@s1:26379,s2:26380/cropq/0"


def test_the_api_and_the_producer_do_not_load_the_worker_app() -> None:
    code = (
        "import sys, api.main\n"
        "api.main.create_app()\n"
        "from worker.celery_config import producer_app\n"
        "from worker.settings import Settings\n"
        "app = producer_app(Settings())\n"
        "print(sorted(name for name in app.tasks if name.startswith('cropq.')))\n"
        "print(sorted(m for m in sys.modules if m in "
        "('worker.celery_app', 'worker.tasks', 'worker.webhooks.tasks', 'worker.batch_tasks', 'cv2', "
        "'numpy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "[]"]  # no task registered, no worker module loaded


def test_the_producer_has_no_task_and_the_worker_s_sending_options() -> None:
    s = Settings(redis_url=SENTINEL_URL, queue_name="q1", visibility_timeout=900)
    producer = producer_app(s)
    worker = make_celery(s)
    for option in (
        "broker_url",
        "broker_transport_options",
        "task_serializer",
        "accept_content",
        "task_routes",
        "broker_connection_retry_on_startup",
        "task_send_sent_event",
    ):
        assert producer.conf[option] == worker.conf[option], option
    # The Sentinel group reaches kombu through the transport options, on the producer too.
    assert producer.conf.broker_transport_options["master_name"] == "cropq"
    assert producer.conf.broker_transport_options["visibility_timeout"] == 900


def test_routes_send_each_task_to_its_queue() -> None:
    producer = producer_app(Settings(queue_name="q1"))
    router = producer.amqp.router
    assert router.route({}, contracts.CROP_TASK)["queue"].name == "q1"
    assert router.route({}, contracts.WEBHOOK_TASK)["queue"].name == webhook_queue("q1")
    for name in (contracts.BATCH_FEED_TASK, contracts.BATCH_FINISH_TASK):
        assert router.route({}, name)["queue"].name == contracts.batch_queue("q1") == "q1.batch"
    assert router.route({}, contracts.BATCH_WEBHOOK_TASK)["queue"].name == webhook_queue("q1")


def test_the_worker_registers_every_contract_name() -> None:
    worker_app.loader.import_default_modules()
    names = {
        contracts.CROP_TASK,
        contracts.WEBHOOK_TASK,
        contracts.BATCH_FEED_TASK,
        contracts.BATCH_FINISH_TASK,
        contracts.BATCH_WEBHOOK_TASK,
    }
    assert names <= set(worker_app.tasks)
