"""Auth, pools and membership endpoints: validate, check access, one service, serialize."""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.api.serializers import (
    AuthOutput,
    CredentialsInput,
    LogoutInput,
    MemberRoleInput,
    MemberSerializer,
    PasswordChangeInput,
    PoolOutput,
    PoolSerializer,
    ProvisionInput,
    ProvisionOutput,
    ProvisionSchemaInput,
    RefreshInput,
    SignupInput,
    TokenPairOutput,
    UserOutput,
    ValidateOutput,
)
from accounts.login_guard import request_address
from accounts.models import Role, User
from poolhub.errors import Forbidden
from poolhub.openapi import error_responses
from poolhub.throttling import process_cache
from uploads.idempotency import idempotency_key_parse


class AuthThrottle(SimpleRateThrottle):
    """Per client address, for the endpoints that take passwords (signup, login)."""

    scope = "auth"
    cache = process_cache

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginThrottle(AuthThrottle):
    """Per client address, high enough for a fleet behind one NAT (failures are limited apart, per
    account and per address: accounts.login_guard); it only bounds the password-hashing cost."""

    scope = "login"


class RefreshThrottle(AuthThrottle):
    """Per client address too, at a rate that lets many clients behind one NAT keep their sessions."""

    scope = "refresh"


def _valid(serializer_class: type[Any], data: Any, **kwargs: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return cast(dict[str, Any], serializer.validated_data)



def _pool_context(user: User, roles: dict[Any, str] | None = None) -> dict[str, Any]:
    if roles is None:
        roles = selectors.pool_roles_for_user(user=user)
    return {"roles": roles, "admin": selectors.user_is_admin(user=user)}


def _user(request: Request) -> User:
    return cast(User, request.user)


class SignupApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes = [AuthThrottle]

    @extend_schema(request=SignupInput, responses={201: AuthOutput, **error_responses(400, 409, 429)}, auth=[])
    def post(self, request: Request) -> Response:
        data = _valid(CredentialsInput, request.data)
        services.user_signup(username=data["username"], password=data["password"])
        user, tokens = services.user_login(username=data["username"], password=data["password"],
                                           address=request_address(request))
        return Response({"user": UserOutput(user).data, **tokens}, status=status.HTTP_201_CREATED)


class LoginApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes = [LoginThrottle]

    @extend_schema(request=CredentialsInput, responses={200: AuthOutput, **error_responses(400, 401, 429)}, auth=[])
    def post(self, request: Request) -> Response:
        data = _valid(CredentialsInput, request.data)
        user, tokens = services.user_login(username=data["username"], password=data["password"],
                                           address=request_address(request))
        return Response({"user": UserOutput(user).data, **tokens})


class RefreshApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes = [RefreshThrottle]

    @extend_schema(request=RefreshInput, responses={200: TokenPairOutput, **error_responses(400, 401, 429)}, auth=[])
    def post(self, request: Request) -> Response:
        data = _valid(RefreshInput, request.data)
        return Response(services.token_refresh(refresh=data["refresh"]))


class LogoutApi(APIView):
    @extend_schema(request=LogoutInput, responses={204: None, **error_responses(400, 401)})
    def post(self, request: Request) -> Response:
        data = _valid(LogoutInput, request.data)
        services.user_logout(user=_user(request), access=cast(Any, request.auth), refresh=data.get("refresh") or None)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordChangeApi(APIView):
    """The signed-in user's password; the token pair in hand is revoked and a new pair returned."""

    throttle_classes = [AuthThrottle]

    @extend_schema(request=PasswordChangeInput, responses={200: TokenPairOutput, **error_responses(400, 401, 429)})
    def post(self, request: Request) -> Response:
        data = _valid(PasswordChangeInput, request.data)
        tokens = services.user_password_change(
            user=_user(request), current_password=data["current_password"], new_password=data["new_password"],
            access=cast(Any, request.auth), refresh=data.get("refresh") or None)
        return Response(tokens)


class ValidateApi(APIView):
    @extend_schema(responses={200: ValidateOutput, **error_responses(401)})
    def get(self, request: Request) -> Response:
        user = _user(request)
        roles = selectors.pool_roles_for_user(user=user)
        pools = [
            {"id": str(pool.id), "name": pool.name, "role": roles.get(pool.id, "admin")}
            for pool in selectors.pool_list(user=user)
        ]
        return Response({"user": UserOutput(user).data, "pools": pools})


class PoolListCreateApi(APIView):
    @extend_schema(responses={200: PoolOutput(many=True), **error_responses(401)})
    def get(self, request: Request) -> Response:
        user = _user(request)
        pools = selectors.pool_list(user=user)
        roles = selectors.pool_roles_for_user(user=user)
        return Response(PoolOutput(pools, many=True, context=_pool_context(user, roles)).data)

    @extend_schema(request=PoolSerializer, responses={201: PoolOutput, **error_responses(400, 401, 403, 409)})
    def post(self, request: Request) -> Response:
        user = _user(request)
        if not selectors.user_is_admin(user=user):
            raise Forbidden("only admins create pools")
        data = _valid(PoolSerializer, request.data)
        pool = services.pool_create(data=data)
        return Response(PoolOutput(pool, context=_pool_context(user)).data, status=status.HTTP_201_CREATED)


class PoolDetailApi(APIView):
    @extend_schema(responses={200: PoolOutput, **error_responses(401, 404)})
    def get(self, request: Request, pool_id: UUID) -> Response:
        user = _user(request)
        pool = selectors.pool_access(user=user, pool_id=pool_id)
        return Response(PoolOutput(pool, context=_pool_context(user)).data)

    @extend_schema(request=PoolSerializer, responses={200: PoolOutput, **error_responses(400, 401, 403, 404, 409)})
    def patch(self, request: Request, pool_id: UUID) -> Response:
        user = _user(request)
        pool = selectors.pool_access(user=user, pool_id=pool_id, roles=[Role.MANAGER])
        data = _valid(PoolSerializer, request.data, instance=pool, partial=True)
        pool = services.pool_update(pool=pool, data=data)
        return Response(PoolOutput(pool, context=_pool_context(user)).data)


class MemberListApi(APIView):
    @extend_schema(responses={200: MemberSerializer(many=True), **error_responses(401, 404)})
    def get(self, request: Request, pool_id: UUID) -> Response:
        pool = selectors.pool_access(user=_user(request), pool_id=pool_id)
        return Response(MemberSerializer(selectors.pool_member_list(pool=pool), many=True).data)

    @extend_schema(request=MemberSerializer,
                   responses={201: MemberSerializer, **error_responses(400, 401, 403, 404, 409)})
    def post(self, request: Request, pool_id: UUID) -> Response:
        pool = selectors.pool_access(user=_user(request), pool_id=pool_id, roles=[Role.MANAGER])
        data = _valid(MemberSerializer, request.data)
        membership = services.pool_member_add(pool=pool, username=data["username"], role=data["role"])
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailApi(APIView):
    patch_is_partial = False  # PATCH sets the role: the body is whole (see poolhub.openapi)
    @extend_schema(request=MemberRoleInput, responses={200: MemberSerializer, **error_responses(400, 401, 403, 404)})
    def patch(self, request: Request, pool_id: UUID, username: str) -> Response:
        pool = selectors.pool_access(user=_user(request), pool_id=pool_id, roles=[Role.MANAGER])
        data = _valid(MemberRoleInput, request.data)
        membership = services.pool_member_update(pool=pool, username=username, role=data["role"])
        return Response(MemberSerializer(membership).data)

    @extend_schema(responses={204: None, **error_responses(401, 403, 404)})
    def delete(self, request: Request, pool_id: UUID, username: str) -> Response:
        pool = selectors.pool_access(user=_user(request), pool_id=pool_id, roles=[Role.MANAGER])
        services.pool_member_remove(pool=pool, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberProvisionApi(APIView):
    """POST /pools/{pool}/members/provision: up to POOLHUB_PROVISION_MAX accounts at once.

    Its path shadows a member named "provision" in `/members/{username}`; that member's PATCH
    and DELETE still work here.
    """

    @extend_schema(request=ProvisionSchemaInput,
                   responses={201: ProvisionOutput, **error_responses(400, 401, 403, 404, 409, 503)},
                   parameters=[OpenApiParameter("Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER,
                                                description="the same key and body return the first response "
                                                            "again and create nothing")])
    def post(self, request: Request, pool_id: UUID) -> Response:
        user = _user(request)
        pool = selectors.pool_access(user=user, pool_id=pool_id, roles=[Role.MANAGER])
        data = _valid(ProvisionInput, request.data)
        key = idempotency_key_parse(request.headers.get("Idempotency-Key"))
        members, replayed = services.pool_members_provision_once(
            pool=pool, by=user, count=data["count"], prefix=data["prefix"], role=data["role"], idempotency_key=key)
        response = Response(ProvisionOutput({"members": members}).data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"  # the body holds passwords
        if replayed:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(exclude=True)  # documented once, as PATCH /pools/{pool}/members/{username}
    def patch(self, request: Request, pool_id: UUID) -> Response:
        return MemberDetailApi().patch(request, pool_id=pool_id, username="provision")

    @extend_schema(exclude=True)
    def delete(self, request: Request, pool_id: UUID) -> Response:
        return MemberDetailApi().delete(request, pool_id=pool_id, username="provision")
