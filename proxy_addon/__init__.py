"""The capture proxy: a mitmproxy addon with one parser module per wire format."""
