"""The capture proxy: a mitmproxy addon with one parser module per provider wire format. Not built yet."""
