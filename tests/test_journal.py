"""The journal on disk: generations written whole, damage named, never read
past, the previous generation kept, one control plane per directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from rolecall.hooks_protocol import (
    Role,
    StateCorruptError,
    StateError,
    StateLockedError,
    Topology,
)
from rolecall.supervisor._durable import load_records
from rolecall.supervisor._journal import Journal
from rolecall.supervisor._service_record import (
    ChangeRecord,
    MemberRecord,
    ServiceRecord,
    record_from_data,
    record_to_data,
)

pytestmark = pytest.mark.timeout(30)


def _record(epoch: int) -> dict[str, Any]:
    return record_to_data(
        ServiceRecord(
            service="cache",
            topology=Topology.REDUNDANT,
            replicas=1,
            source_topology=Topology.STANDALONE,
            source_replicas=1,
            epoch=epoch,
            next_number=3,
            members={
                "cache-1": MemberRecord(number=1, role=Role.PRIMARY, epoch=epoch),
                "cache-2": MemberRecord(
                    number=2, role=Role.REPLICA, primary="cache-1", epoch=epoch
                ),
            },
            change=ChangeRecord("role", "cache-2", Role.REPLICA, "cache-1", epoch),
            written_at=1000.0 + epoch,
        )
    )


def _files(journal: Journal) -> list[str]:
    return sorted(path.name for path in (journal.root / "cache").iterdir())


@pytest.fixture
def journal(tmp_path: Path) -> Any:
    opened = Journal.open(tmp_path / "state")
    yield opened
    opened.close()


class TestWriting:
    """Records go to disk whole, private, two generations deep."""

    def test_a_record_comes_back_as_written(self, journal: Journal) -> None:
        """What is saved loads back equal, and reads as the same record."""
        journal.save("cache", _record(4))

        loaded = journal.load("cache")

        assert loaded == _record(4)
        assert loaded is not None
        assert record_from_data(loaded).members["cache-2"].primary == "cache-1"

    def test_files_are_private(self, journal: Journal, tmp_path: Path) -> None:
        """The directories are mode 0700 and the records 0600."""
        journal.save("cache", _record(1))

        modes = {
            path.name: stat.S_IMODE(path.stat().st_mode)
            for path in (
                tmp_path / "state",
                journal.root,
                journal.root / "cache",
                journal.root / "cache" / "000000000001.rec",
            )
        }

        assert modes == {
            "state": 0o700,
            "journal": 0o700,
            "cache": 0o700,
            "000000000001.rec": 0o600,
        }

    def test_the_previous_generation_is_kept_and_older_ones_go(
        self, journal: Journal
    ) -> None:
        """After three writes the newest two generations are on disk."""
        for epoch in (1, 2, 3):
            journal.save("cache", _record(epoch))

        assert _files(journal) == ["000000000002.rec", "000000000003.rec"]
        assert journal.load("cache") == _record(3)

    def test_a_write_cut_short_leaves_the_old_record(
        self, journal: Journal, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A crash before the rename leaves a temporary file, which the next
        load removes, and the old record."""
        journal.save("cache", _record(1))

        def crash(*args: object) -> None:
            raise OSError(5, "Input/output error")

        with monkeypatch.context() as patched:
            patched.setattr(os, "replace", crash)
            with pytest.raises(StateError) as refused:
                journal.save("cache", _record(2))

        reopened = Journal(journal.root)

        assert "the previous record stands" in str(refused.value)
        assert _files(journal) == [".000000000002.tmp", "000000000001.rec"]
        assert reopened.load("cache") == _record(1)
        assert _files(journal) == ["000000000001.rec"]

    def test_a_write_renamed_before_the_crash_is_the_new_record(
        self, journal: Journal
    ) -> None:
        """Once renamed, a generation is the record, whatever came after."""
        journal.save("cache", _record(1))
        journal.save("cache", _record(2))

        assert Journal(journal.root).load("cache") == _record(2)

    def test_a_deleted_service_has_no_record(self, journal: Journal) -> None:
        """Deleting forgets a service and its folder."""
        journal.save("cache", _record(1))
        journal.delete("cache")

        assert journal.load("cache") is None
        assert journal.services() == []


class TestDamage:
    """A damaged newest generation is named, kept, and never read past."""

    def _damaged(self, journal: Journal, change: bytes | None) -> Path:
        journal.save("cache", _record(1))
        journal.save("cache", _record(2))
        newest = journal.root / "cache" / "000000000002.rec"
        data = newest.read_bytes()
        if change is None:
            newest.write_bytes(data[: len(data) - 7])
        else:
            middle = len(data) // 2
            newest.write_bytes(data[:middle] + change + data[middle + 1 :])

        return newest

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            (None, "is truncated ("),
            (b"\xff", "is damaged (its checksum does not match)"),
        ],
        ids=["truncated", "flipped-byte"],
    )
    def test_damage_is_named_with_what_to_do(
        self, journal: Journal, change: bytes | None, reason: str
    ) -> None:
        """The error names the file, why, the intact previous generation and
        the command that sets the damaged file aside; the file is kept."""
        newest = self._damaged(journal, change)
        before = newest.read_bytes()
        previous = journal.root / "cache" / "000000000001.rec"

        with pytest.raises(StateCorruptError) as damaged:
            Journal(journal.root).load("cache")

        message = str(damaged.value)
        assert message.startswith(f"journal file {str(newest)!r} {reason}")
        assert f"The previous generation {str(previous)!r} is intact" in message
        assert f"`mv {newest} {newest}.damaged`" in message
        assert (damaged.value.path, damaged.value.previous) == (
            str(newest),
            str(previous),
        )
        assert newest.read_bytes() == before

    def test_moved_aside_the_previous_generation_is_used(
        self, journal: Journal
    ) -> None:
        """Doing what the error says resumes from the previous generation."""
        newest = self._damaged(journal, b"\x00")
        newest.rename(f"{newest}.damaged")

        assert Journal(journal.root).load("cache") == _record(1)

    def test_an_older_generation_comes_back_with_its_epoch_raised(
        self, journal: Journal
    ) -> None:
        """Read from the generation before one set aside, the record's epoch
        is raised by one per generation set aside: never used twice."""
        newest = self._damaged(journal, b"\x00")
        newest.rename(f"{newest}.damaged")

        records = load_records(Journal(journal.root))

        assert records["cache"].epoch == 2

    def test_without_a_previous_generation_the_way_out_is_said(
        self, journal: Journal
    ) -> None:
        """A single damaged generation: the error says adoption takes over."""
        journal.save("cache", _record(1))
        only = journal.root / "cache" / "000000000001.rec"
        only.write_bytes(b"RCJ1" + only.read_bytes()[4:20])

        with pytest.raises(StateCorruptError) as damaged:
            Journal(journal.root).load("cache")

        assert damaged.value.previous is None
        assert "No earlier generation is left" in str(damaged.value)

    def test_a_record_of_another_shape_is_refused(self, journal: Journal) -> None:
        """A record this version cannot read stops the start, naming it."""
        journal.save("cache", {**_record(1), "format": 99})

        with pytest.raises(StateCorruptError) as unread:
            load_records(journal)

        assert "unknown record format 99" in str(unread.value)
        assert unread.value.path == str(journal.root / "cache")


class TestLock:
    """One control plane per state directory."""

    def test_a_second_opener_is_refused_until_the_first_closes(
        self, tmp_path: Path
    ) -> None:
        """The second open fails with a clear message; after close it works."""
        first = Journal.open(tmp_path)
        try:
            with pytest.raises(StateLockedError) as locked:
                Journal.open(tmp_path)
        finally:
            first.close()

        Journal.open(tmp_path).close()

        assert str(locked.value) == (
            f"another control plane holds the journal in"
            f" {str(tmp_path / 'journal')!r}: stop it first, or give this one"
            " its own state directory"
        )
