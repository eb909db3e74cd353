"""Where API input enters: the body's size and shape, query parameters, pagination, filters.

Each guard answers in the API's error shape (`{field: [message]}` for a 400 naming the
field or parameter, `{"detail", "code"}` otherwise), so a malformed request never
reaches a view, the database or Docker. The limits themselves are in core/limits.py.
"""

from __future__ import annotations

import json

import django_filters
from django import forms
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, pagination, parsers

from hivemind.core import limits

API_PREFIX = "/api/"


class RequestLimitsMiddleware:
    """Under /api/: a body past MAX_REQUEST_BYTES is a 413 before anything reads it, and a
    query parameter holding a NUL character or past MAX_QUERY_VALUE is a 400 naming it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if request.path.startswith(API_PREFIX):
            refusal = self._refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)

    @staticmethod
    def _refusal(request: HttpRequest) -> JsonResponse | None:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Content-Length is not a number", "code": "parse_error"}, status=400)
        if length > limits.MAX_REQUEST_BYTES:
            detail = f"the request body is {length} bytes; at most {limits.MAX_REQUEST_BYTES}"
            return JsonResponse({"detail": detail, "code": "request_too_large"}, status=413)
        for name, values in request.GET.lists():
            for value in values:
                problem = None
                if len(value) > limits.MAX_QUERY_VALUE:
                    problem = f"is {len(value)} characters long; at most {limits.MAX_QUERY_VALUE}"
                elif limits.control_character(value):
                    problem = f"holds the control character {limits.control_character(value)}"
                if problem:
                    return JsonResponse({name[:100]: [problem]}, status=400)
        return None


def _check_json(value, path: str, depth: int) -> None:
    """No NUL (or other control character) in any key, no string a database cannot hold, bounded nesting."""
    if depth > limits.MAX_JSON_DEPTH:
        raise exceptions.ValidationError({path or "body": [f"nested deeper than {limits.MAX_JSON_DEPTH} levels"]})
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if limits.control_character(key):
                shown = json.dumps(key)[:60]
                raise exceptions.ValidationError({"body": [f"the key {shown} holds a control character"]})
            _check_json(item, where, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, str) and "\x00" in value:
        raise exceptions.ValidationError({path or "body": ["holds a NUL character, which cannot be stored or run"]})


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus: no NaN or Infinity (not JSON), no NUL anywhere, bounded nesting."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None
        _check_json(data, "", 0)
        return data


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """`limit` 1-1000 and `offset` 0-1,000,000,000; anything else is a 400 naming the parameter
    (DRF's own quietly falls back to the default page)."""

    max_limit = 1000
    max_offset = 1_000_000_000

    def _number(self, request, name: str, low: int, high: int) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return None
        text = raw.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 12) or not low <= int(text) <= high:
            expected = f"expected a whole number from {low} to {high}, got {raw[:40]!r}"
            raise exceptions.ValidationError({name: [expected]})
        return int(text)

    def get_limit(self, request):
        limit = self._number(request, self.limit_query_param, 1, self.max_limit)
        return self.default_limit if limit is None else limit

    def get_offset(self, request):
        return self._number(request, self.offset_query_param, 0, self.max_offset) or 0


class StrictBooleanField(forms.NullBooleanField):
    """true/false (and 1/0, yes/no); any other value is an error instead of "no filter"."""

    TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
    # The raw text: NullBooleanField's select widget maps anything it does not know to None
    # ("no filter") before to_python could refuse it.
    widget = forms.TextInput

    def to_python(self, value):
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise forms.ValidationError(f"expected true or false, got {str(value)[:40]!r}", code="invalid")

    def validate(self, value):
        pass


class BooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField
