"""Where traces come from: JSONL ingest, RAGTruth, Langfuse, OTLP/HTTP spans."""
