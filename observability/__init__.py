"""Metrics collectors, tracing, logs, alert rules, notifiers and anomaly detection."""
