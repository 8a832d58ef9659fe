//! The key-range arithmetic of `list`: prefix, start, start-after and end
//! combined into one range `[lower, upper)`.

/// What `list` selects.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Only keys with this prefix.
    pub prefix: Option<Vec<u8>>,
    /// Only keys ≥ start.
    pub start: Option<Vec<u8>>,
    /// Only keys > start_after (wins over `start`).
    pub start_after: Option<Vec<u8>>,
    /// Only keys < end.
    pub end: Option<Vec<u8>>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Descending.
    pub reverse: bool,
}

/// The lower bound of a list range.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lower {
    Unbounded,
    Included(Vec<u8>),
    Excluded(Vec<u8>),
}

impl Lower {
    pub(crate) fn admits_from_below(&self, k: &[u8]) -> bool {
        match self {
            Lower::Unbounded => true,
            Lower::Included(l) => k >= l.as_slice(),
            Lower::Excluded(l) => k > l.as_slice(),
        }
    }

    /// True when no key lies between this bound and the exclusive upper `hi`.
    pub(crate) fn is_empty_with(&self, hi: &Option<Vec<u8>>) -> bool {
        match (self, hi) {
            (Lower::Included(l) | Lower::Excluded(l), Some(h)) => l >= h,
            _ => false,
        }
    }
}

impl ListQuery {
    /// The key range `[lower, upper)` that start, start-after, end and prefix
    /// select together.
    pub(crate) fn bounds(&self) -> (Lower, Option<Vec<u8>>) {
        let mut lo = match (&self.start_after, &self.start) {
            (Some(s), _) => Lower::Excluded(s.clone()),
            (None, Some(s)) => Lower::Included(s.clone()),
            (None, None) => Lower::Unbounded,
        };
        let mut hi = self.end.clone();
        if let Some(p) = &self.prefix {
            if !lo.admits_from_below(p) {
                // The bound is inside or past the prefix: it stays.
            } else {
                lo = Lower::Included(p.clone());
            }
            if let Some(succ) = prefix_successor(p) {
                hi = Some(match hi {
                    Some(h) if h < succ => h,
                    _ => succ,
                });
            }
        }
        (lo, hi)
    }
}

/// The smallest byte string greater than every string that starts with
/// `prefix`, or `None` when there is none (prefix empty or all 0xFF).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
