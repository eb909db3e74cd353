"""The dashboard's forms. They only gather what people type into the shape the services take
(a spec dict, a number of replicas); validating it is the services' job (applications.spec
`clean_spec` and the checks in applications.services), whose errors name the spec's field.
`spec_errors_to_fields` puts each of those errors next to the form control it came from.
"""

from __future__ import annotations

import re

from django import forms

from hivemind.applications.spec import RESTART_POLICIES

HEALTH_TYPES = [("", "none"), ("tcp", "TCP port open"), ("http", "HTTP GET answers 2xx/3xx"), ("cmd", "command")]
_SPLIT = re.compile(r"[\s,]+")


def _whole_or_text(value: str):
    """A number typed into a text box as int when it is one; anything else goes to the service
    as typed, so its message ("expected a whole number…, got 'abc'") is the one shown."""
    text = (value or "").strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


class DeployForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="a DNS label, unique in the tenant, e.g. web")
    image = forms.CharField(max_length=300, help_text="e.g. nginx:1.27 or registry.example.com/team/api:2.1")
    replicas = forms.CharField(max_length=10, initial="1")
    command = forms.CharField(max_length=2000, required=False, help_text="overrides the image's command")
    cpu = forms.CharField(max_length=20, initial="100m", label="CPU request", help_text="e.g. 250m or 0.5")
    cpu_limit = forms.CharField(max_length=20, required=False, label="CPU limit")
    memory = forms.CharField(max_length=20, initial="64Mi", label="Memory request", help_text="e.g. 128Mi or 1Gi")
    memory_limit = forms.CharField(max_length=20, required=False, label="Memory limit")
    ports = forms.CharField(
        max_length=2000, required=False, help_text="container ports, or host:container, e.g. 8080 80:8080 53/udp"
    )
    env = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, label="Environment", help_text="one KEY=value a line"
    )
    health_type = forms.ChoiceField(choices=HEALTH_TYPES, required=False, label="Health check")
    health_port = forms.CharField(max_length=10, required=False, label="Health check port")
    health_path = forms.CharField(max_length=500, required=False, label="Health check path", initial="/")
    health_command = forms.CharField(max_length=2000, required=False, label="Health check command")
    health_interval = forms.CharField(max_length=10, required=False, label="Health check interval (s)", initial="10")
    restart = forms.ChoiceField(choices=[(p, p) for p in RESTART_POLICIES], initial="always", label="Restart policy")
    node_selector = forms.CharField(
        max_length=1000, required=False, label="Node selector", help_text="labels a node must have, e.g. zone=eu-1"
    )

    def clean_node_selector(self) -> dict[str, str]:
        selector = {}
        for pair in _SPLIT.split(self.cleaned_data["node_selector"].strip()):
            if not pair:
                continue
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise forms.ValidationError(f"expected key=value pairs, got {pair!r}")
            selector[key] = value
        return selector

    def spec(self) -> dict:
        """The spec as the API takes it; empty boxes are left out so the service's defaults apply."""
        data = self.cleaned_data
        spec: dict = {"image": data["image"], "restart": data["restart"] or "always"}
        if data["command"].strip():
            spec["command"] = data["command"]
        resources = {key: data[key].strip() for key in ("cpu", "cpu_limit", "memory", "memory_limit")}
        spec["resources"] = {key: value for key, value in resources.items() if value}
        ports = [p for p in _SPLIT.split(data["ports"].strip()) if p]
        if ports:
            spec["ports"] = ports
        env = [line.strip() for line in data["env"].splitlines() if line.strip()]
        if env:
            spec["env"] = env
        if data["health_type"]:
            health: dict = {"type": data["health_type"]}
            if data["health_interval"].strip():
                health["interval"] = data["health_interval"].strip()
            if data["health_type"] in ("tcp", "http"):
                health["port"] = _whole_or_text(data["health_port"]) if data["health_port"].strip() else None
            if data["health_type"] == "http":
                health["path"] = data["health_path"].strip() or "/"
            if data["health_type"] == "cmd":
                health["command"] = data["health_command"]
            spec["health"] = health
        if data.get("node_selector"):
            spec["placement"] = {"node_selector": data["node_selector"]}
        return spec

    def replicas_value(self):
        return _whole_or_text(self.cleaned_data["replicas"])


# Where an error about a spec field (as clean_spec and the services name it) is shown.
_FIELD_OF = [
    ("resources.cpu_limit", "cpu_limit"),
    ("resources.memory_limit", "memory_limit"),
    ("resources.cpu", "cpu"),
    ("resources.memory", "memory"),
    ("health.port", "health_port"),
    ("health.path", "health_path"),
    ("health.command", "health_command"),
    ("health.interval", "health_interval"),
    ("health", "health_type"),
    ("placement.node_selector", "node_selector"),
    ("ports", "ports"),
    ("env", "env"),
    ("image", "image"),
    ("command", "command"),
    ("restart", "restart"),
    ("replicas", "replicas"),
    ("name", "name"),
]


def spec_errors_to_fields(form: forms.Form, message_dict: dict[str, list[str]]) -> None:
    """Attach each service error to its form control; a nested spec field keeps its path in the
    message (`ports[1].host_port: expected 1 to 65535`), anything unplaced becomes a form error."""
    for key, messages in message_dict.items():
        field = next(
            (f for prefix, f in _FIELD_OF if key == prefix or key.startswith((f"{prefix}.", f"{prefix}["))), None
        )
        for message in messages:
            if field is None:
                form.add_error(None, f"{key}: {message}" if key not in ("__all__", "detail", "spec") else message)
            else:
                form.add_error(field, message if key == field or key == _spec_key(field) else f"{key}: {message}")


def _spec_key(field: str) -> str:
    return next((prefix for prefix, f in _FIELD_OF if f == field), field)


class ScaleForm(forms.Form):
    replicas = forms.CharField(max_length=10, label="Replicas")


class RollbackForm(forms.Form):
    revision = forms.TypedChoiceField(coerce=int, label="Roll back to revision")

    def __init__(self, *args, revisions: list[tuple[int, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["revision"].choices = revisions


class DeleteForm(forms.Form):
    confirm = forms.CharField(max_length=200, label="Type the app's name to confirm")

    def __init__(self, *args, app_name: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.app_name = app_name

    def clean_confirm(self) -> str:
        if self.cleaned_data["confirm"] != self.app_name:
            raise forms.ValidationError(f"type {self.app_name} to delete it")
        return self.cleaned_data["confirm"]


class AppFilterForm(forms.Form):
    name = forms.CharField(required=False, label="Name contains")
    status = forms.ChoiceField(required=False, label="Status")

    def __init__(self, *args, statuses: list[tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", "any"), *statuses]


class WorkflowFilterForm(forms.Form):
    state = forms.ChoiceField(required=False, label="State")
    kind = forms.ChoiceField(required=False, label="Kind")

    def __init__(self, *args, states: list[tuple[str, str]], kinds: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["state"].choices = [("", "any"), *states]
        self.fields["kind"].choices = [("", "any"), *[(k, k) for k in kinds]]


# --- tokens and users -----------------------------------------------------------------------


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="what it is for, e.g. laptop or ci")
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, initial=30, required=False, label="Expires in (days)",
        help_text="1 to 3650; empty: never expires",
    )  # fmt: skip


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="letters, digits and @ . + - _")
    email = forms.CharField(max_length=254, required=False, label="E-mail address")
    password = forms.CharField(
        widget=forms.PasswordInput(render_value=True), required=False, strip=False,
        help_text="empty: one is generated and shown once",
    )  # fmt: skip
    is_staff = forms.BooleanField(required=False, label="Platform staff (sees and does everything)")


class PasswordForm(forms.Form):
    password = forms.CharField(
        widget=forms.PasswordInput(render_value=True), required=False, strip=False, label="New password",
        help_text="empty: one is generated and shown once",
    )  # fmt: skip


def service_errors_to_fields(form: forms.Form, error) -> None:
    """A service's ValidationError next to the controls it names; the rest above the form."""
    errors = error.message_dict if hasattr(error, "error_dict") else {None: error.messages}
    for field, messages in errors.items():
        for message in messages:
            form.add_error(field if field in form.fields else None, message)
