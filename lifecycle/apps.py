from django.apps import AppConfig


class LifecycleConfig(AppConfig):
    name = "lifecycle"
    verbose_name = "Data lifecycle: usage, quotas and retention"
    default_auto_field = "django.db.models.BigAutoField"
