"""OTLP/HTTP spans: decode the request, read GenAI conventions, assemble traces."""
