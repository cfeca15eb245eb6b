"""The API's page: DRF's limit/offset, with both bounded.

DRF caps neither by default: `?limit=99999999999999999999999` or a like offset reaches the
database as a number beyond 64 bits (PostgreSQL: "bigint out of range", a 500). A limit above
MAX_LIMIT is MAX_LIMIT; an offset past MAX_OFFSET is refused with 400.
"""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

MAX_LIMIT = 1000
MAX_OFFSET = 10**12


class Pagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_offset(self, request: Request) -> int:
        offset = super().get_offset(request)
        if offset > MAX_OFFSET:
            raise ValidationError({self.offset_query_param: [f"at most {MAX_OFFSET}"]})
        return offset
