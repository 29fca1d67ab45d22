"""A forwarder's position in the buffer: which sequence numbers it has done, and which are out.

Pure bookkeeping, no I/O: the buffer persists ``low`` and ``done`` with its commits. A cursor
is a contiguous low-water mark plus a few acknowledged ranges above it, so live records can be
acknowledged ahead of a backlog without the persisted state growing with the backlog.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from gateway.records import Record

#: Reads records with lo <= seq <= hi, ascending, at most `limit`: (lo, hi, limit) -> rows.
Reader = Callable[[int, int, int], list[tuple[int, Record]]]
#: Above this many acknowledged ranges a cursor gets no live share until the backlog closes
#: the gaps; bounds the persisted cursor state.
MAX_DONE_RANGES: Final = 32


class RangeSet:
    """Disjoint, sorted, inclusive integer ranges ``[(start, end), ...]`` that merge on insert."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for a, b in ranges:
            self.add(a, b)

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def size(self) -> int:
        return sum(b - a + 1 for a, b in self)

    def __contains__(self, x: object) -> bool:
        if not isinstance(x, int):
            return False
        i = bisect.bisect_right(self._starts, x) - 1
        return i >= 0 and x <= self._ends[i]

    def add(self, a: int, b: int) -> None:
        if a > b:
            return
        # Ranges that touch or overlap [a, b] are merged into it.
        i = bisect.bisect_left(self._ends, a - 1)
        j = bisect.bisect_right(self._starts, b + 1)
        if i < j:
            a = min(a, self._starts[i])
            b = max(b, self._ends[j - 1])
        self._starts[i:j] = [a]
        self._ends[i:j] = [b]

    def remove(self, a: int, b: int) -> None:
        if a > b:
            return
        i = bisect.bisect_left(self._ends, a)
        j = bisect.bisect_right(self._starts, b)
        if i >= j:
            return
        keep: list[tuple[int, int]] = []
        if self._starts[i] < a:
            keep.append((self._starts[i], a - 1))
        if self._ends[j - 1] > b:
            keep.append((b + 1, self._ends[j - 1]))
        self._starts[i:j] = [k[0] for k in keep]
        self._ends[i:j] = [k[1] for k in keep]

    def first(self) -> tuple[int, int] | None:
        return (self._starts[0], self._ends[0]) if self._starts else None

    def pop_first(self) -> tuple[int, int]:
        return self._starts.pop(0), self._ends.pop(0)

    def max_end(self) -> int | None:
        return self._ends[-1] if self._ends else None

    def gaps(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """Sub-ranges of ``[lo, hi]`` not covered by this set, ascending."""
        pos = lo
        i = bisect.bisect_left(self._ends, lo)
        while pos <= hi:
            if i < len(self._starts) and self._starts[i] <= hi:
                if self._starts[i] > pos:
                    yield pos, self._starts[i] - 1
                pos = max(pos, self._ends[i] + 1)
                i += 1
            else:
                yield pos, hi
                return

    def copy(self) -> RangeSet:
        other = RangeSet()
        other._starts = list(self._starts)
        other._ends = list(self._ends)
        return other


@dataclass
class Cursor:
    """One forwarder's delivery state.

    ``low``: every seq <= low is done. ``done``: acknowledged ranges above ``low``.
    ``inflight``: ranges handed out in batches and neither acknowledged nor released.
    ``live_mark``: the highest seq handed out as live; unsent seqs below it are backlog.
    ``live_first``: False delivers strictly in sequence order (backends that need it); it is
    configuration, not persisted state. ``online`` and ``last_ack`` tell the buffer whether a
    commit may wait a moment for this forwarder's acks (``Buffer._settle``).
    """

    name: str
    low: int
    done: RangeSet = field(default_factory=RangeSet)
    inflight: RangeSet = field(default_factory=RangeSet)
    live_mark: int = 0
    dirty: bool = True  # persisted state changed since the last commit
    live_first: bool = True
    online: bool = False  # the delivery loop's backend is connected and answering (not persisted)
    last_ack: float = float("-inf")  # monotonic time of the last acknowledgement (not persisted)

    def acked(self, seq: int) -> bool:
        """Whether this forwarder's backend has acknowledged ``seq`` (or it was filtered)."""
        return seq <= self.low or seq in self.done

    def covered(self) -> RangeSet:
        c = self.done.copy()
        for a, b in self.inflight:
            c.add(a, b)
        return c

    def mark_done(self, a: int, b: int) -> None:
        a = max(a, self.low + 1)
        if a > b:
            return
        self.done.add(a, b)
        first = self.done.first()
        while first is not None and first[0] <= self.low + 1:
            self.low = max(self.low, first[1])
            self.done.pop_first()
            first = self.done.first()
        self.dirty = True

    def pending_count(self, last_seq: int) -> int:
        """Sequence numbers after ``low`` that are not done (an upper bound on records)."""
        return max(0, last_seq - self.low - self.done.size())

    def take(self, last: int, max_records: int, max_bytes: int,
             read: Reader) -> tuple[list[tuple[int, Record]], tuple[tuple[int, int], ...]]:
        """Claim a batch: the newest unsent (live) first, then the oldest backlog.

        Without backlog, records go out in order from ``live_mark``. With backlog (unsent seqs
        below ``live_mark``, or more new records than one batch holds), live gets half the
        batch, taken from the newest end; whatever it skips becomes backlog, which is read
        oldest first. A strict cursor (``live_first=False``) reads everything oldest first.
        Returns the records and the claimed ranges (now in flight).
        """
        out: list[tuple[int, Record]] = []
        claims: list[tuple[int, int]] = []
        if last <= self.low:
            return out, ()
        if not self.live_first:
            # Only the unsent seqs after ``low`` in ascending order: acknowledged ranges above
            # it (left by partial acks or by an earlier live-first run) are skipped, in-flight
            # ones too, so a second batch taken before the first settles still goes forward.
            _claim_gaps(read, self.covered(), self.low + 1, last, max_records, max_bytes, out, claims)
            self.live_mark = max(self.live_mark, max((b for _, b in claims), default=0))
            return out, self._settle_claims(out, claims)
        has_gaps = self.live_mark > self.low and any(self.covered().gaps(self.low + 1, self.live_mark))
        if self.live_mark < last:
            if not has_gaps and last - self.live_mark <= max_records:
                self.live_mark = _claim(read, self.live_mark + 1, last, max_records, max_bytes, out, claims)
            elif len(self.done) < MAX_DONE_RANGES:
                n, nbytes = max(1, max_records // 2), max(1, max_bytes // 2)
                lo = max(self.live_mark + 1, last - n + 1)
                self.live_mark = _claim(read, lo, last, n, nbytes, out, claims)
        if self.live_mark > self.low:
            cov = self.covered()
            for a, b in claims:
                cov.add(a, b)
            _claim_gaps(read, cov, self.low + 1, self.live_mark, max_records, max_bytes, out, claims)
        return out, self._settle_claims(out, claims)

    def _settle_claims(self, out: list[tuple[int, Record]],
                       claims: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
        """Claims holding records go in flight; empty ones (dropped by policy) are done."""
        real: list[tuple[int, int]] = []
        seqs = sorted(s for s, _ in out)
        for a, b in claims:
            if bisect.bisect_left(seqs, a) < bisect.bisect_right(seqs, b):
                real.append((a, b))
                self.inflight.add(a, b)
            else:
                self.mark_done(a, b)  # nothing left in that stretch (dropped by policy)
        return tuple(real)

    def settle(self, ranges: Iterable[tuple[int, int]], record_seqs: Iterable[int],
               acked: Iterable[int] | None) -> None:
        """End a batch: acked seqs (None: all) and its empty stretches are done, the rest free."""
        ranges = list(ranges)
        done = RangeSet(ranges)
        if acked is not None:
            keep = set(acked)
            for s in record_seqs:
                if s not in keep:
                    done.remove(s, s)
        for a, b in ranges:
            self.inflight.remove(a, b)
        for a, b in done:
            self.mark_done(a, b)


def _claim_gaps(read: Reader, covered: RangeSet, lo: int, hi: int, max_records: int, max_bytes: int,
                out: list[tuple[int, Record]], claims: list[tuple[int, int]]) -> None:
    """Claim the seqs of ``[lo, hi]`` not in ``covered``, ascending, until ``out`` is full."""
    gaps = list(covered.gaps(lo, hi))
    if not gaps:
        return  # the usual case: everything below the live mark is done or in flight
    spent = sum(len(r.body) for _, r in out)
    for a, b in gaps:
        if len(out) >= max_records or spent >= max_bytes:
            break
        before = len(out)
        _claim(read, a, b, max_records - len(out), max_bytes - spent, out, claims)
        spent += sum(len(r.body) for _, r in out[before:])


def _claim(read: Reader, lo: int, hi: int, n: int, nbytes: int,
           out: list[tuple[int, Record]], claims: list[tuple[int, int]]) -> int:
    """Read up to n records / nbytes in [lo, hi] into ``out``; claim the stretch covered."""
    got = read(lo, hi, n + 1)
    # The first record always fits; then as many as n and nbytes allow (a prefix of ``got``).
    k = min(len(got), n)
    if k > 1:
        spent = list(itertools.accumulate([len(r.body) for _, r in got[:k]]))
        if spent[-1] > nbytes:
            k = max(1, bisect.bisect_right(spent, nbytes))
    if k < len(got):
        hi = got[k][0] - 1  # the stretch claimed ends before the first record left out
    out += got[:k]
    claims.append((lo, hi))
    return hi
