"""One router per audience: ingest (OTLP), finance, engineer, admin, health."""
