from django.urls import URLPattern, URLResolver, path

from batching.api import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("pools/<uuid:pool_id>/groups", views.GroupListApi.as_view(), name="pool-groups"),
    path("pools/<uuid:pool_id>/webhook/test", views.PoolWebhookTestApi.as_view(), name="pool-webhook-test"),
    path("pools/<uuid:pool_id>/results/latest", views.ResultLatestApi.as_view(), name="pool-result-latest"),
    path("groups/<uuid:group_id>", views.GroupDetailApi.as_view(), name="group-detail"),
    path("groups/<uuid:group_id>/close", views.GroupCloseApi.as_view(), name="group-close"),
    path("groups/<uuid:group_id>/claim", views.GroupClaimApi.as_view(), name="group-claim"),
    path("groups/<uuid:group_id>/archive", views.GroupArchiveApi.as_view(), name="group-archive"),
    path("groups/<uuid:group_id>/result", views.GroupResultApi.as_view(), name="group-result"),
    path("results/<uuid:result_id>", views.ResultDetailApi.as_view(), name="result-detail"),
    path("results/<uuid:result_id>/content", views.ResultContentApi.as_view(), name="result-content"),
]
