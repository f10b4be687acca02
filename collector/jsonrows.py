"""Arrow rows → JSON-ready dicts: ISO timestamps, maps as objects, costs as numbers."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    map_columns = {f.name for f in table.schema if pa.types.is_map(f.type)}
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if key in map_columns:
                row[key] = dict(value or [])
            else:
                row[key] = _value(value)
    return rows
