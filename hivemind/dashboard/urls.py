from django.urls import path

from hivemind.dashboard import alert_views, views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("tenant/switch/", views.switch_tenant, name="tenant-switch"),
    path("nodes/", views.nodes, name="nodes"),
    path("nodes/<str:name>/", views.node_detail, name="node-detail"),
    path("nodes/<str:name>/<str:action>/", views.node_action, name="node-action"),
    path("apps/", views.apps, name="apps"),
    path("apps/new/", views.app_deploy, name="app-deploy"),
    path("apps/<int:pk>/", views.app_detail, name="app-detail"),
    path("apps/<int:pk>/logs/", views.app_logs_view, name="app-logs"),
    path("apps/<int:pk>/<str:action>/", views.app_action, name="app-action"),
    path("networks/", views.networks, name="networks"),
    path("networks/<int:pk>/", views.network_detail, name="network-detail"),
    path("volumes/", views.volumes, name="volumes"),
    path("volumes/<int:pk>/", views.volume_detail, name="volume-detail"),
    path("alerts/", alert_views.alerts, name="alerts"),
    path("alerts/history/", alert_views.alert_history, name="alert-history"),
    path("alerts/<int:pk>/", alert_views.alert_detail, name="alert-detail"),
    path("alerts/rules/", alert_views.rules, name="alert-rules"),
    path("alerts/rules/new/", alert_views.rule_create, name="alert-rule-create"),
    path("alerts/rules/<int:pk>/", alert_views.rule_detail, name="alert-rule-detail"),
    path("alerts/rules/<int:pk>/edit/", alert_views.rule_edit, name="alert-rule-edit"),
    path("alerts/rules/<int:pk>/delete/", alert_views.rule_delete, name="alert-rule-delete"),
    path("alerts/silences/", alert_views.silences, name="silences"),
    path("alerts/silences/<int:pk>/", alert_views.silence_detail, name="silence-detail"),
    path("alerts/silences/<int:pk>/expire/", alert_views.silence_expire, name="silence-expire"),
    path("workflows/", views.workflows, name="workflows"),
    path("workflows/<int:pk>/", views.workflow_detail, name="workflow-detail"),
    path("workflows/<int:pk>/timeline/", views.workflow_timeline, name="workflow-timeline"),
    path("workflows/<int:pk>/<str:action>/", views.workflow_action, name="workflow-action"),
    path("tenants/", views.tenants, name="tenants"),
    path("tenants/<str:slug>/", views.tenant_detail, name="tenant-detail"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token-revoke"),
    path("users/", views.users, name="users"),
    path("users/<str:username>/", views.user_detail, name="user-detail"),
    path("users/<str:username>/<str:action>/", views.user_action, name="user-action"),
]
