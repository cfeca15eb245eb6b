"""The permanent file store: GridFS on MongoDB (SecantusDB when embedded)."""

from __future__ import annotations

from functools import lru_cache

import gridfs
import pymongo
from django.conf import settings
from pymongo.database import Database


@lru_cache(maxsize=1)
def mongo_client() -> pymongo.MongoClient[dict[str, object]]:
    return pymongo.MongoClient(settings.MONGO_URL, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                               socketTimeoutMS=60000, retryWrites=True)


def mongo_db() -> Database[dict[str, object]]:
    return mongo_client()[settings.MONGO_DB]


def bucket(name: str = "fs") -> gridfs.GridFSBucket:
    """A GridFS bucket; uploads and results use their own bucket names."""
    return gridfs.GridFSBucket(mongo_db(), bucket_name=name)
