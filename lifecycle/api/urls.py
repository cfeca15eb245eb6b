from django.urls import URLPattern, path

from lifecycle.api import views

urlpatterns: list[URLPattern] = [
    path("pools/<uuid:pool_id>/usage", views.PoolUsageApi.as_view(), name="pool-usage"),
]
