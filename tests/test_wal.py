"""The write-ahead log keeps every acknowledged body until it is checkpointed."""

from __future__ import annotations

from pathlib import Path

from ingest.wal import WriteAheadLog


def test_records_come_back_in_order_until_checkpointed(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync=False)
    seqs = [wal.append(f"body {i}".encode(), kind=i % 3) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    wal.checkpoint(2)
    assert [(s, k, p) for s, k, p in wal.pending()] == [
        (3, 2, b"body 2"),
        (4, 0, b"body 3"),
        (5, 1, b"body 4"),
    ]
    wal.close()
    reopened = WriteAheadLog(tmp_path, fsync=False)
    assert [s for s, _, _ in reopened.pending()] == [3, 4, 5]
    assert reopened.append(b"next", 1) == 6


def test_torn_tail_is_cut_and_earlier_records_kept(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync=False)
    wal.append(b"complete", 1)
    wal.append(b"torn record that the crash cut short", 1)
    wal.close()
    segment = sorted(tmp_path.glob("*.wal"))[-1]
    segment.write_bytes(segment.read_bytes()[:-10])  # the crash hit mid-write
    reopened = WriteAheadLog(tmp_path, fsync=False)
    assert [p for _, _, p in reopened.pending()] == [b"complete"]
    assert reopened.append(b"after", 1) == 2  # the torn record never got its 200
    assert [p for _, _, p in reopened.pending()] == [b"complete", b"after"]


def test_flipped_bit_stops_replay_at_the_damage(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync=False)
    wal.append(b"good", 1)
    wal.append(b"damaged", 1)
    wal.close()
    segment = sorted(tmp_path.glob("*.wal"))[-1]
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0x01
    segment.write_bytes(bytes(data))
    assert [p for _, _, p in WriteAheadLog(tmp_path, fsync=False).pending()] == [b"good"]


def test_checkpointed_segments_are_deleted(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync=False, segment_bytes=64)
    for _i in range(10):
        wal.append(b"x" * 50, 1)
    assert len(list(tmp_path.glob("*.wal"))) == 10
    wal.checkpoint(10)
    assert len(list(tmp_path.glob("*.wal"))) == 1  # the open segment stays
    assert list(wal.pending()) == []
    wal.close()
    assert list(WriteAheadLog(tmp_path, fsync=False).pending()) == []


def test_checkpoint_never_moves_back(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync=True)
    for _ in range(3):
        wal.append(b"x", 1)
    wal.checkpoint(3)
    wal.checkpoint(1)
    assert wal.checkpointed == 3 and list(wal.pending()) == []


def test_size_counts_a_segment_deleted_mid_listing_as_empty(tmp_path: Path) -> None:
    # /healthz and /metrics read the size while the writer's checkpoint deletes
    # segments: a segment gone between listing and stat must not raise (it gave
    # /healthz a 500 right after a restart's replay).
    wal = WriteAheadLog(tmp_path, fsync=False, segment_bytes=64)
    for _ in range(3):
        wal.append(b"x" * 50, 1)
    listed = wal._segments()
    listed[0].unlink()
    wal._segments = lambda: listed  # type: ignore[method-assign]
    assert wal.size_bytes() == sum(p.stat().st_size for p in listed[1:])
