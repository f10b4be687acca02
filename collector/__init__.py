"""The collector: FastAPI app with the OTLP receiver and the HTTP API."""
