"""Writes fixtures/parquet-pyarrow/input/events.parquet with a real producer.

Run: python3 -m venv target/tools/venv && target/tools/venv/bin/pip install pyarrow==26.0.1
     target/tools/venv/bin/python scripts/make_parquet_fixture.py
The output is committed (small), so the tests need no pyarrow.

It holds every kind of column a Personalize value can come from: nested
structs, timestamps in ms, a date, a list<string>, a dictionary-encoded
string, a decimal, int32, float32, uint64, bool, binary and nulls, in two
row groups.
"""
import datetime as dt
import decimal
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

out = pathlib.Path(__file__).resolve().parent.parent / "fixtures/parquet-pyarrow/input/events.parquet"
out.parent.mkdir(parents=True, exist_ok=True)

utc = dt.timezone.utc
table = pa.table(
    {
        "detail": pa.array(
            [
                {"user": {"id": "u-1", "age": 31}, "page": "home"},
                {"user": {"id": "u-2", "age": None}, "page": "cart"},
                {"user": {"id": "u-3", "age": 45}, "page": None},
                {"user": {"id": "u-4", "age": 22}, "page": "home, \"deals\""},
            ],
            type=pa.struct(
                [
                    ("user", pa.struct([("id", pa.string()), ("age", pa.int32())])),
                    ("page", pa.string()),
                ]
            ),
        ),
        "item_id": pa.array([101, 102, 103, 18446744073709551615], type=pa.uint64()),
        "event_time": pa.array(
            [
                dt.datetime(2024, 3, 1, 10, 0, 0, 999000, tzinfo=utc),
                dt.datetime(2024, 3, 1, 10, 0, 1, tzinfo=utc),
                dt.datetime(2024, 3, 1, 10, 0, 2, tzinfo=utc),
                dt.datetime(2024, 3, 1, 10, 0, 3, tzinfo=utc),
            ],
            type=pa.timestamp("ms", tz="UTC"),
        ),
        "event_type": pa.array(["view", "purchase", "view", "view"]).dictionary_encode(),
        "value": pa.array([0.1, 2.5, None, 1.0], type=pa.float32()),
        "price": pa.array(
            [decimal.Decimal("12.50"), decimal.Decimal("0.99"), None, decimal.Decimal("-3.00")],
            type=pa.decimal128(9, 2),
        ),
        "day": pa.array([dt.date(2024, 3, 1)] * 4, type=pa.date32()),
        "tags": pa.array([["a", "b"], [], None, ["c", None, "d"]], type=pa.list_(pa.string())),
        "member": pa.array([True, False, None, True]),
        "note": pa.array([b"raw", None, b"x,y", b"z"], type=pa.binary()),
        "unused": pa.array(["skip"] * 4),
    }
)
pq.write_table(table, out, row_group_size=2, compression="snappy")
print(out, pq.ParquetFile(out).metadata.num_row_groups, "row groups")
