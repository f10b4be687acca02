"""The one thing pyproject.toml cannot say: the optional C extensions.

``ingest._otlp_native`` decodes OTLP protobuf about four times faster than
upb does, and ``ingest._rows_native`` flattens attribute maps for Arrow
(bench/ingest.py). Both are optional: without a C compiler the build skips
them with a warning and ``ingest`` runs its Python paths alone.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ingest._otlp_native",
            ["ingest/_otlp_native.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "ingest._rows_native",
            ["ingest/_rows_native.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
