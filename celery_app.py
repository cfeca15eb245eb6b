"""The Celery application: tasks live in each app's tasks.py, settings come from Django's."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "poolhub.settings")

app = Celery("poolhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Logs and metrics (docs/operations.md): Django's LOGGING instead of Celery's handlers, the
# enqueuing request's id carried in a message header, a log context and counters per task.
from celery import signals  # noqa: E402

from poolhub import logs, metrics  # noqa: E402

logs.logging_apply()
logs.celery_say_as_json()
signals.setup_logging.connect(logs.logging_apply, weak=False)
signals.before_task_publish.connect(logs.celery_before_publish, weak=False)
signals.task_prerun.connect(logs.celery_task_prerun, weak=False)
signals.task_prerun.connect(metrics.celery_task_prerun, weak=False)
signals.task_postrun.connect(metrics.celery_task_postrun, weak=False)
signals.task_postrun.connect(logs.celery_task_postrun, weak=False)
signals.task_success.connect(metrics.celery_task_success, weak=False)
signals.task_retry.connect(metrics.celery_task_retry, weak=False)
signals.worker_process_shutdown.connect(metrics.celery_process_exit, weak=False)
signals.worker_init.connect(metrics.worker_metrics_serve, weak=False)
