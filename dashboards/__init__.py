"""Streamlit dashboards that read only the collector's HTTP API. Not built yet."""
