from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hivemind.core.health import platform_health


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/overview.html", {"health": platform_health()})


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(
        request,
        "dashboard/error.html",
        {"code": 404, "title": "Not found", "message": "There is nothing here, or you may not see it."},
        status=404,
    )


def server_error(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dashboard/error.html",
        {
            "code": 500,
            "title": "Something went wrong",
            "message": "The error was logged. Try again, or ask your platform admin.",
        },
        status=500,
    )
