"""The one thing pyproject.toml cannot say: the optional C extension.

``ingest._otlp_native`` decodes OTLP protobuf about four times faster than
upb does (bench/ingest.py). It is optional: without a C compiler the build
skips it with a warning and ``ingest.otlp`` decodes with upb alone.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ingest._otlp_native",
            ["ingest/_otlp_native.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
