"""Streamlit dashboards (``tokentrail dashboards``) that read only the collector's HTTP API.

``app.py`` is the entrypoint (sign-in, pages by role, shared filters), ``views/``
holds one module per page, ``api.py`` the typed API client, ``filters.py`` and
``data.py`` the pure parts, ``ui.py`` what the pages share.
"""
