"""Tokentrail: the CLI and the one settings object."""
