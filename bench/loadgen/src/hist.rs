//! Latency statistics: a log-linear histogram (HDR-like, ≤ 0.8 % relative
//! error) that each client task fills on its own and that is merged once at the
//! end, plus exact nearest-rank percentiles over a sorted slice.

use serde::Serialize;

/// Sub-buckets per power of two (2^SUB_BITS): the relative error of a bucket's
/// midpoint is at most 1 / 2^(SUB_BITS+1).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

/// A histogram of `u64` values (nanoseconds, in practice). Counts live in a
/// vector that grows only up to the largest bucket seen, so an idle client's
/// histogram costs nothing and a busy one a few KiB.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: Vec<u32>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

/// The bucket of `v`: exact below 2·SUB, then SUB buckets per power of two.
fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // ≥ SUB_BITS
    let shift = e - SUB_BITS;
    let sub = (v >> shift) - SUB; // 0..SUB
    (SUB + u64::from(shift) * SUB + sub) as usize
}

/// The lowest and highest value that fall into bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i);
    }
    let shift = (i - SUB) / SUB;
    let sub = (i - SUB) % SUB;
    let low = (SUB + sub) << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Records one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        let i = bucket(v);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] = self.counts[i].saturating_add(1);
        if self.total == 0 || v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        self.total += 1;
        self.sum += u128::from(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        if self.total == 0 || other.min < self.min {
            self.min = other.min;
        }
        self.max = self.max.max(other.max);
        self.total += other.total;
        self.sum += other.sum;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The smallest recorded value (0 when empty).
    pub fn min(&self) -> u64 {
        self.min
    }

    /// The largest recorded value (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The nearest-rank `q`-quantile (`q` in 0..=1): the value of the
    /// ⌈q·n⌉-th smallest sample, to within its bucket (the bucket's midpoint,
    /// clamped to the recorded min and max). 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = nearest_rank(self.total, q);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                let (low, high) = bucket_range(i);
                let mid = low + (high - low) / 2;
                return mid.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// A summary in microseconds (the values being nanoseconds).
    pub fn summary_us(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            count: self.total,
            min_us: us(self.min),
            p50_us: us(self.quantile(0.5)),
            p99_us: us(self.quantile(0.99)),
            p999_us: us(self.quantile(0.999)),
            max_us: us(self.max),
            mean_us: self.mean() / 1000.0,
        }
    }
}

/// The 1-based rank of the nearest-rank `q`-quantile among `n` samples.
fn nearest_rank(n: u64, q: f64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    ((q * n as f64).ceil() as u64).clamp(1, n)
}

/// The exact nearest-rank `q`-quantile of an ascending slice (0 when empty).
pub fn percentile_sorted(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = nearest_rank(sorted.len() as u64, q);
    sorted[(rank - 1) as usize]
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl LatencySummary {
    /// Exact percentiles of nanosecond samples (sorts them).
    pub fn from_samples_ns(samples: &mut [u64]) -> LatencySummary {
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let n = samples.len();
        LatencySummary {
            count: n as u64,
            min_us: us(samples.first().copied().unwrap_or(0)),
            p50_us: us(percentile_sorted(samples, 0.5)),
            p99_us: us(percentile_sorted(samples, 0.99)),
            p999_us: us(percentile_sorted(samples, 0.999)),
            max_us: us(samples.last().copied().unwrap_or(0)),
            mean_us: if n == 0 {
                0.0
            } else {
                samples.iter().map(|&v| v as f64).sum::<f64>() / n as f64 / 1000.0
            },
        }
    }
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return write!(f, "no samples");
        }
        write!(
            f,
            "p50 {} p99 {} p99.9 {} max {} (n={})",
            fmt_us(self.p50_us),
            fmt_us(self.p99_us),
            fmt_us(self.p999_us),
            fmt_us(self.max_us),
            self.count
        )
    }
}

/// Formats microseconds with a readable unit.
pub fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut prev = None;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let i = bucket(v);
            let (low, high) = bucket_range(i);
            assert!(low <= v && v <= high, "{v} in bucket {i} = {low}..={high}");
            if let Some(p) = prev {
                assert!(i == p || i == p + 1 || v > 100_000, "gap at {v}");
            }
            prev = Some(i);
        }
    }

    #[test]
    fn relative_error_is_small() {
        let mut h = Histogram::new();
        for v in [1_234_567u64, 98_765, 5, 77_777_777] {
            h.record(v);
            let (low, high) = bucket_range(bucket(v));
            let mid = low + (high - low) / 2;
            assert!(
                (mid as f64 - v as f64).abs() / (v as f64) < 0.01,
                "{v} → {mid}"
            );
        }
    }

    #[test]
    fn exact_percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_sorted(&v, 0.5), 50);
        assert_eq!(percentile_sorted(&v, 0.99), 99);
        assert_eq!(percentile_sorted(&v, 0.999), 100);
        assert_eq!(percentile_sorted(&v, 1.0), 100);
        assert_eq!(percentile_sorted(&v, 0.0), 1);
        assert_eq!(percentile_sorted(&[7], 0.99), 7);
        assert_eq!(percentile_sorted(&[], 0.5), 0);
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile_sorted(&v, 0.999), 999);
    }

    #[test]
    fn histogram_percentiles_match_exact_ones_within_a_bucket() {
        let mut h = Histogram::new();
        let mut exact = Vec::new();
        // A skewed distribution: mostly ~100 µs, a tail up to 50 ms.
        for i in 0..10_000u64 {
            let v = if i % 100 == 0 {
                50_000_000 - i
            } else {
                100_000 + (i * 7919) % 20_000
            };
            h.record(v);
            exact.push(v);
        }
        exact.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999] {
            let e = percentile_sorted(&exact, q) as f64;
            let a = h.quantile(q) as f64;
            assert!((a - e).abs() / e < 0.01, "q={q}: {a} vs {e}");
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.max(), 50_000_000);
        assert_eq!(h.quantile(1.0), 50_000_000);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        let mut all = Histogram::new();
        for v in 0..5000u64 {
            let x = v * v;
            if v % 3 == 0 { &mut a } else { &mut b }.record(x);
            all.record(x);
        }
        let mut m = Histogram::new();
        m.merge(&a);
        m.merge(&b);
        m.merge(&Histogram::new());
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(m.quantile(q), all.quantile(q));
        }
        assert_eq!(
            (m.min(), m.max(), m.count()),
            (all.min(), all.max(), all.count())
        );
        assert!((m.mean() - all.mean()).abs() < 1e-6);
    }

    #[test]
    fn empty_and_single() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.5), 0);
        assert_eq!(h.summary_us().count, 0);
        let mut h = Histogram::new();
        h.record(123_456);
        assert_eq!(h.quantile(0.5), 123_456);
        assert_eq!(h.quantile(0.999), 123_456);
    }

    #[test]
    fn summary_from_samples() {
        let mut s: Vec<u64> = (1..=1000).rev().map(|v| v * 1000).collect();
        let sum = LatencySummary::from_samples_ns(&mut s);
        assert_eq!(sum.p50_us, 500.0);
        assert_eq!(sum.p99_us, 990.0);
        assert_eq!(sum.max_us, 1000.0);
        assert_eq!(sum.min_us, 1.0);
    }
}
