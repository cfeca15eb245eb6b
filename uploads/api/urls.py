from django.urls import URLPattern, URLResolver, path

from uploads.api import tus, views

urlpatterns: list[URLPattern | URLResolver] = [
    path("pools/<uuid:pool_id>/uploads", views.PoolUploadCreateApi.as_view(), name="pool-uploads"),
    path("pools/<uuid:pool_id>/batches", views.PoolBatchCreateApi.as_view(), name="pool-batches"),
    path("pools/<uuid:pool_id>/tus", tus.TusCreateApi.as_view(), name="pool-tus"),
    path("tus/<str:tus_id>", tus.TusUploadApi.as_view(), name="tus-upload"),
    path("uploads", views.UploadListApi.as_view(), name="uploads"),
    path("uploads/<uuid:upload_id>", views.UploadDetailApi.as_view(), name="upload-detail"),
    path("uploads/<uuid:upload_id>/content", views.UploadContentApi.as_view(), name="upload-content"),
]
