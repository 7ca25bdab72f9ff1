"""Where results go: webhooks and Slack, OpenTelemetry export, Prometheus metrics."""
