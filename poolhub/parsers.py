"""DRF's JSON parser, with deeply nested documents refused as 400 instead of a 500.

The standard library's decoder recurses once per nesting level; a body such as 3,000 `[` makes
it raise RecursionError, which DRF's parser does not catch (it only maps ValueError).
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - the document is nested too deeply") from exc
