"""Typed shapes of the contract's JSON objects (fields the server adds are kept too)."""

from __future__ import annotations

from typing import Any, TypedDict


class User(TypedDict):
    id: str
    username: str
    role: str


class Pool(TypedDict, total=False):
    id: str
    name: str
    window_seconds: int
    grace_seconds: int
    max_file_bytes: int
    allowed_types: list[str]
    late_policy: str
    created_at: str
    role: str | None


class Member(TypedDict):
    username: str
    role: str


class Event(TypedDict):
    seq: int
    type: str
    at: str
    data: dict[str, Any]


class Upload(TypedDict, total=False):
    id: str
    pool: str
    uploader: str
    filename: str
    size: int
    sha256: str
    content_type: str
    timestamp: str
    status: str
    group: str | None
    attempts: int
    created_at: str
    events: list[Event]


class Batch(TypedDict):
    id: str
    uploads: list[Upload]


class Page(TypedDict):
    count: int
    next: str | None
    previous: str | None
    results: list[Upload]


class Group(TypedDict, total=False):
    id: str
    pool: str
    window_start: str
    window_end: str
    status: str
    upload_count: int
    bytes: int


class Lease(TypedDict):
    lease_id: str
    expires_at: str


class Result(TypedDict, total=False):
    id: str
    pool: str
    group: str
    size: int
    sha256: str
    created_at: str


class Session(TypedDict):
    user: User
    pools: list[dict[str, Any]]
