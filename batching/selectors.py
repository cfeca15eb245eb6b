"""Reads for groups and results, and the access check for a group or result by id."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from django.db.models import Count, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.urls import reverse

from accounts.models import Pool, Role, User
from accounts.selectors import pool_access
from batching.models import Group, Result
from poolhub.errors import NotFound
from uploads.models import Upload, UploadStatus


def result_content_path(*, result_id: UUID | str) -> str:
    """The API path a result's bytes are downloaded from (from the URL conf, not spelled out)."""
    return reverse("result-content", kwargs={"result_id": result_id})


def group_paths(*, group_id: UUID | str) -> dict[str, str]:
    """The API paths of a group and of its claim, for webhooks and clients that follow links."""
    return {"group_url": reverse("group-detail", kwargs={"group_id": group_id}),
            "claim_url": reverse("group-claim", kwargs={"group_id": group_id})}


def with_stats(groups: QuerySet[Group]) -> QuerySet[Group]:
    return groups.annotate(upload_count=Count("uploads"), bytes=Coalesce(Sum("uploads__size"), Value(0)),
                           contributor_count=Count("uploads__uploader", distinct=True))


def group_get_for(*, user: User, group_id: UUID | str, roles: Iterable[Role] | None = None) -> Group:
    """The group, with its stats, if `user` may act on it with one of `roles` (None: any member).
    A group in a pool the user is not in is 404, as if it did not exist."""
    group = with_stats(Group.objects.select_related("pool")).filter(id=group_id).first()
    if group is None:
        raise NotFound("no such group")
    try:
        pool_access(user=user, pool_id=group.pool_id, roles=roles)
    except NotFound as exc:
        raise NotFound("no such group") from exc
    return group


def group_list(*, pool: Pool, status: str | None = None) -> QuerySet[Group]:
    groups = Group.objects.filter(pool=pool)
    if status:
        groups = groups.filter(status=status)
    return with_stats(groups).order_by("-window_start")


def group_upload_counts(*, group: Group) -> dict[str, int]:
    counts = {str(status): 0 for status in UploadStatus}
    for row in Upload.objects.filter(group=group).values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    counts["total"] = sum(counts.values())
    return counts


def _stored_uploads(group: Group) -> QuerySet[Upload]:
    return Upload.objects.filter(group=group, status=UploadStatus.STORED).order_by("timestamp", "id")


def group_lineage(*, group: Group) -> list[UUID]:
    """The uploads a result of this group is computed from: every stored one, in archive order."""
    return list(_stored_uploads(group).values_list("id", flat=True))


def group_manifest(*, group: Group) -> list[dict[str, Any]]:
    rows = _stored_uploads(group).values("id", "uploader__username", "filename", "timestamp", "size", "sha256",
                                         "content_type")
    return [
        {"id": str(row["id"]), "uploader": row["uploader__username"], "filename": row["filename"],
         "timestamp": row["timestamp"].isoformat().replace("+00:00", "Z"), "size": row["size"],
         "sha256": row["sha256"], "content_type": row["content_type"]}
        for row in rows
    ]


def group_failed_uploads(*, group: Group) -> list[str]:
    return [str(upload_id) for upload_id in
            Upload.objects.filter(group=group, status=UploadStatus.FAILED).order_by("timestamp", "id")
            .values_list("id", flat=True)]


def result_latest(*, pool: Pool) -> Result:
    result = Result.objects.filter(pool=pool).order_by("-created_at").first()
    if result is None:
        raise NotFound("this pool has no result yet")
    return result


def result_get_for(*, user: User, result_id: UUID | str) -> Result:
    result = Result.objects.filter(id=result_id).first()
    if result is None:
        raise NotFound("no such result")
    try:
        pool_access(user=user, pool_id=result.pool_id)
    except NotFound as exc:
        raise NotFound("no such result") from exc
    return result
