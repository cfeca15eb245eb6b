from django.urls import path

from accounts.api import views

urlpatterns = [
    path("auth/signup", views.SignupApi.as_view(), name="auth-signup"),
    path("auth/login", views.LoginApi.as_view(), name="auth-login"),
    path("auth/refresh", views.RefreshApi.as_view(), name="auth-refresh"),
    path("auth/logout", views.LogoutApi.as_view(), name="auth-logout"),
    path("auth/password", views.PasswordChangeApi.as_view(), name="auth-password"),
    path("auth/validate", views.ValidateApi.as_view(), name="auth-validate"),
    path("pools", views.PoolListCreateApi.as_view(), name="pools"),
    path("pools/<uuid:pool_id>", views.PoolDetailApi.as_view(), name="pool-detail"),
    path("pools/<uuid:pool_id>/members", views.MemberListApi.as_view(), name="pool-members"),
    path("pools/<uuid:pool_id>/members/provision", views.MemberProvisionApi.as_view(), name="pool-members-provision"),
    path("pools/<uuid:pool_id>/members/<str:username>", views.MemberDetailApi.as_view(), name="pool-member"),
]
