//! The S3 writer's window of data not yet sent: what a client wrote at or past the first
//! unsent byte, in any order, until it is cut into parts.
//!
//! Data is kept as disjoint segments keyed by their offset; a later write wins where it
//! overlaps an earlier one (the earlier segment is trimmed or split, which costs no copy:
//! segments are [`Bytes`]). The window knows how far the data runs without a gap from its
//! base, which is what may be sent as a part before the commit. Cutting a part takes the
//! segments below its end out and moves the base on; a gap cut at commit is zeros.
//!
//! It does no I/O and knows nothing about parts' sizes or limits: the writer decides when to
//! cut and how much to keep.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Data at or past `base`, not yet sent.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The offset of the first unsent byte: everything below it has been cut into parts.
    base: u64,
    /// Disjoint segments by start offset, each at or past `base`, none empty.
    segments: BTreeMap<u64, Bytes>,
    /// The bytes held in `segments`.
    bytes: u64,
    /// Where the data from `base` first has a gap (or ends): `base..contiguous_end` is
    /// covered without a hole.
    contiguous_end: u64,
}

/// A piece of a cut range: its offset and its bytes.
pub(crate) type Piece = (u64, Bytes);

impl Pending {
    /// The offset of the first unsent byte.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How many bytes from the base are covered without a gap.
    pub(crate) fn contiguous(&self) -> u64 {
        self.contiguous_end - self.base
    }

    /// The bytes [`Pending::insert`] of `len` bytes at `offset` would add: its length less
    /// what it overlaps. `offset` must be at or past the base.
    pub(crate) fn added_by(&self, offset: u64, len: u64) -> u64 {
        let end = offset + len;
        let overlap: u64 = self
            .overlapping(offset, end)
            .map(|(start, segment)| {
                let segment_end = start + segment.len() as u64;
                segment_end.min(end) - start.max(offset)
            })
            .sum();
        len - overlap
    }

    /// Keeps `data` at `offset` (at or past the base), replacing what it overlaps.
    pub(crate) fn insert(&mut self, offset: u64, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        let overlapped: Vec<u64> = self.overlapping(offset, end).map(|(s, _)| s).collect();
        for start in overlapped {
            let Some(segment) = self.segments.remove(&start) else {
                continue;
            };
            self.bytes -= segment.len() as u64;
            let segment_end = start + segment.len() as u64;
            if start < offset {
                // Invariant: start < offset < segment_end, so the cut is inside the segment.
                self.keep(start, segment.slice(..(offset - start) as usize));
            }
            if segment_end > end {
                self.keep(end, segment.slice((end - start) as usize..));
            }
        }
        self.keep(offset, data);
        self.extend_contiguous();
    }

    /// Takes `base..base + len` out (the segments in it, the last one split at the end if it
    /// runs past) and moves the base on by `len`; the pieces come in offset order and may
    /// leave gaps, which stand for zeros.
    pub(crate) fn take(&mut self, len: u64) -> Vec<Piece> {
        let end = self.base + len;
        let mut pieces = Vec::new();
        while let Some(entry) = self.segments.first_entry() {
            let start = *entry.key();
            if start >= end {
                break;
            }
            let mut segment = entry.remove();
            self.bytes -= segment.len() as u64;
            let segment_end = start + segment.len() as u64;
            if segment_end > end {
                // Invariant: start < end < segment_end, so the cut is inside the segment.
                let rest = segment.split_off((end - start) as usize);
                self.keep(end, rest);
            }
            pieces.push((start, segment));
        }
        self.base = end;
        self.contiguous_end = self.contiguous_end.max(end);
        self.extend_contiguous();
        pieces
    }

    /// The segments that share at least one byte with `offset..end`, last first.
    fn overlapping(&self, offset: u64, end: u64) -> impl Iterator<Item = (u64, &Bytes)> {
        self.segments
            .range(..end)
            .rev()
            .map(|(start, segment)| (*start, segment))
            .take_while(move |(start, segment)| start + segment.len() as u64 > offset)
    }

    /// Adds a segment known not to overlap any other.
    fn keep(&mut self, start: u64, segment: Bytes) {
        self.bytes += segment.len() as u64;
        self.segments.insert(start, segment);
    }

    /// Moves `contiguous_end` past every segment that continues it.
    fn extend_contiguous(&mut self) {
        while let Some((start, segment)) = self.segments.range(..=self.contiguous_end).next_back() {
            let segment_end = start + segment.len() as u64;
            if segment_end <= self.contiguous_end {
                break;
            }
            self.contiguous_end = segment_end;
        }
    }
}

/// Lays `pieces` (from [`Pending::take`], within `start..start + len`) out as `len` bytes,
/// zeros where none was written.
pub(crate) fn assemble(start: u64, len: usize, pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    for (offset, bytes) in pieces {
        // Invariant: pieces lie inside start..start + len, so this fits a usize.
        let at = (offset - start) as usize;
        out.resize(at, 0);
        out.extend_from_slice(bytes);
    }
    out.resize(len, 0);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use super::*;

    /// The window after `writes`, laid out from its base to `len` bytes.
    fn check(writes: &[(u64, &[u8])], len: usize, expect: &[u8], contiguous: u64) {
        let mut pending = Pending::default();
        let mut model = vec![0u8; len];
        for (offset, data) in writes {
            let added = pending.added_by(*offset, data.len() as u64);
            let before = pending.bytes();
            pending.insert(*offset, Bytes::copy_from_slice(data));
            assert_eq!(pending.bytes(), before + added, "{writes:?}");
            model[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
        }
        assert_eq!(model, expect, "the model itself");
        assert_eq!(pending.contiguous(), contiguous, "{writes:?}");
        let pieces = pending.take(len as u64);
        assert_eq!(assemble(0, len, &pieces), expect, "{writes:?}");
        assert_eq!(pending.bytes(), 0);
        assert_eq!(pending.base(), len as u64);
    }

    #[test]
    fn later_writes_win_and_gaps_are_zeros() {
        check(&[(0, b"abcd"), (4, b"efgh")], 8, b"abcdefgh", 8);
        check(&[(4, b"efgh"), (0, b"abcd")], 8, b"abcdefgh", 8);
        check(&[(2, b"cd")], 6, b"\0\0cd\0\0", 0);
        check(&[(0, b"abcdefgh"), (2, b"XY")], 8, b"abXYefgh", 8);
        check(
            &[(0, b"abcd"), (6, b"gh"), (2, b"XXXXX")],
            8,
            b"abXXXXXh",
            8,
        );
        check(
            &[(1, b"bc"), (5, b"fg"), (0, b"ABCDEFGH")],
            8,
            b"ABCDEFGH",
            8,
        );
        check(&[(0, b"ab"), (4, b"ef"), (1, b"X")], 8, b"aX\0\0ef\0\0", 2);
        check(&[(3, b"d"), (2, b"c"), (1, b"b"), (0, b"a")], 4, b"abcd", 4);
    }

    #[test]
    fn take_splits_a_segment_and_keeps_the_rest() {
        let mut pending = Pending::default();
        pending.insert(0, Bytes::from_static(b"abcdef"));
        pending.insert(8, Bytes::from_static(b"ij"));
        assert_eq!(pending.contiguous(), 6);
        let pieces = pending.take(4);
        assert_eq!(assemble(0, 4, &pieces), b"abcd");
        assert_eq!(
            (pending.base(), pending.bytes(), pending.contiguous()),
            (4, 4, 2)
        );
        // Filling the gap joins the run to the segment past it.
        pending.insert(6, Bytes::from_static(b"gh"));
        assert_eq!(pending.contiguous(), 6);
        let pieces = pending.take(6);
        assert_eq!(assemble(4, 6, &pieces), b"efghij");
        // A gap cut at commit moves the base past it.
        pending.insert(12, Bytes::from_static(b"m"));
        let pieces = pending.take(4);
        assert_eq!(assemble(10, 4, &pieces), b"\0\0m\0");
        assert_eq!(
            (pending.base(), pending.bytes(), pending.contiguous()),
            (14, 0, 0)
        );
    }

    #[test]
    fn added_by_counts_only_new_bytes() {
        let mut pending = Pending::default();
        pending.insert(10, Bytes::from_static(b"0123456789"));
        assert_eq!(pending.added_by(0, 5), 5);
        assert_eq!(pending.added_by(5, 10), 5);
        assert_eq!(pending.added_by(12, 3), 0);
        assert_eq!(pending.added_by(15, 10), 5);
        assert_eq!(pending.added_by(0, 30), 20);
    }
}
