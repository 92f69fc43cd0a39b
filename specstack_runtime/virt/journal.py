"""Records kept on disk as a snapshot and a journal of the changes made since.

A host's guests were one JSON file rewritten whole at each change: every boot then
waited for a rename (ext4 writes a file's data out when a rename replaces it, about a
millisecond and a half here) and encoded every guest of its host, a cost that grew
with the guests. Now a change appends the records it touched to a journal, a write of
a few hundred bytes into the page cache: it survives a crash of the process as the
renamed file did (neither is fsynced), without the wait. Once the journal holds more
lines than there are records, the records go into a new snapshot, written behind on
the file writer's thread, and a new journal begins.

Files, beside `path`:
- `path`: the snapshot, `{..., "guests": {key: record}, "journal": N}` (`records_key`
  names the member; a snapshot with no `journal` is one of before the journal: N = 0);
- `<path>.<N>.log`: journal N, a JSON line per change, `{"key": K, "record": R}`, R
  null for a record removed.

Reading takes the snapshot, then every journal numbered N or more, in order: if the
process died after a journal began but before the snapshot naming it was in place, the
older journal still holds what that snapshot would have. A line that does not parse is
a write a crash cut short; its change was never reported (the caller reports a change
only once `append` returned), so it is skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from specstack_runtime import filewriter, jsoncodec

log = logging.getLogger(__name__)

Records = dict[str, Any]

#: a journal shorter than this is never folded, however few records there are
MIN_LINES = 64


def journal_path(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name}.{number}.log")


def _journals(path: Path, first: int) -> Iterator[tuple[int, Path]]:
    """The journals beside `path` numbered `first` on: they follow each other without a
    gap (the next begins only after a line went into the one before), so each is looked
    up by name, not found by listing a folder that holds every host's files."""
    number = first
    while (journal := journal_path(path, number)).exists():
        yield number, journal
        number += 1


def read(
    path: Path, records_key: str, check: Callable[[Path], dict[str, Any]]
) -> tuple[dict[str, Any], int]:
    """The snapshot's document with its records brought up to date by the journals, and
    the number of the journal to continue. `check` reads the snapshot (its own errors)."""
    doc: dict[str, Any] = check(path) if path.exists() else {records_key: {}}
    records: Records = doc[records_key]
    number = int(doc.get("journal") or 0)
    for n, journal in _journals(path, number):  # older ones are folded into the snapshot
        number = n
        for line in journal.read_bytes().splitlines():
            try:
                change = jsoncodec.loads(line)
                key, record = str(change["key"]), change["record"]
            except (ValueError, KeyError, TypeError):
                log.warning("%s: skipping a change cut short by a crash", journal)
                continue
            if record is None:
                records.pop(key, None)
            else:
                records[key] = record
    return doc, number


class Journal:
    """The journal of `path`, continuing at `number` (as `read` gave it)."""

    def __init__(self, path: Path, number: int) -> None:
        self.path = path
        self.number = number
        current = journal_path(path, number)
        self.lines = current.read_bytes().count(b"\n") if current.exists() else 0
        self._tail_checked = False  # by the first append: reading the files changes nothing

    def append(self, changes: Iterable[tuple[str, Any]]) -> None:
        """Append each (key, record or None) in one write; on disk when it returns."""
        data = b"".join(
            jsoncodec.dumps({"key": key, "record": record}) + b"\n" for key, record in changes
        )
        if not data:
            return
        current = journal_path(self.path, self.number)
        if not self._tail_checked:  # once: its folder made, a line a crash cut short ended
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._cut_short_line(current)
            self._tail_checked = True
        fd = os.open(current, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        self.lines += data.count(b"\n")

    @staticmethod
    def _cut_short_line(current: Path) -> None:
        """Remove a last line a crash cut short (skipped when read): the next must not join
        it. Only the journal's writer does this, before its first append."""
        data = current.read_bytes() if current.exists() else b""
        if data and not data.endswith(b"\n"):
            os.truncate(current, data.rfind(b"\n") + 1)

    def due(self, records: int) -> bool:
        """Whether the journal is long enough to be folded into a snapshot."""
        return self.lines > max(MIN_LINES, records)

    def fold(self, snapshot: Callable[[int], bytes]) -> None:
        """Begin the next journal; `snapshot(number)` (the records as they are now, naming
        that journal) replaces the snapshot behind, then the older journals go."""
        self.number += 1
        self.lines = 0
        filewriter.write_later(self.path, snapshot(self.number))
        filewriter.run_later(_remove_older, self.path, self.number)


def _remove_older(path: Path, number: int) -> None:
    """Remove the journals folded into the snapshot, if the snapshot naming journal
    `number` is the one on disk (its write may have failed: then they stay, and are read)."""
    try:
        on_disk = int(jsoncodec.loads(path.read_bytes()).get("journal") or 0)
    except (OSError, ValueError, AttributeError):
        return
    below = min(number, on_disk)
    older = below
    while older > 0 and journal_path(path, older - 1).exists():
        older -= 1
    for n in range(older, below):  # oldest first: an interrupted removal leaves no gap
        journal_path(path, n).unlink(missing_ok=True)
