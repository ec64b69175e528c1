//! Confidence intervals for the benchmark's figures, distribution-free (latencies and CPU
//! figures on a shared machine are neither normal nor independent of its load):
//!
//! - a quantile (p99) of a sample: the order-statistic interval, ranks from the binomial
//!   distribution of how many samples fall below the true quantile;
//! - a median over rounds (the CPU/op ratio): the same with q = 0.5 over the rounds' values,
//!   its confidence exact (binomial sums), e.g. [min, max] of 5 rounds is 93.75 %;
//! - a ratio of two p99s: the two intervals at 97.5 % each, divided crosswise (Bonferroni:
//!   at least 95 %, conservative).

use serde::Serialize;

/// An interval and the confidence it has (0..1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
    pub confidence: f64,
}

/// P(X <= k) for X ~ Binomial(n, p), summed in log space (n up to millions of samples).
fn binomial_cdf(k: usize, n: usize, p: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_choose = 0.0f64; // ln C(n, 0)
    let mut sum = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            log_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        sum += (log_choose + i as f64 * lp + (n - i) as f64 * lq).exp();
    }
    sum.min(1.0)
}

/// 1-based ranks `(l, u)` of the sorted sample such that `[x_(l), x_(u)]` covers the true
/// `q` quantile with at least `confidence`, as narrow as the binomial allows: the largest
/// `l` with P(B <= l-1) <= alpha/2 and the smallest `u` with P(B >= u) <= alpha/2, B ~
/// Binomial(n, q). `None` when `n` is too small for that confidence.
fn quantile_ranks(n: usize, q: f64, confidence: f64) -> Option<(usize, usize, f64)> {
    if n == 0 || !(0.0..1.0).contains(&q) || q <= 0.0 {
        return None;
    }
    let tail = (1.0 - confidence) / 2.0;
    // A normal guess of the ranks, then the exact binomial walk from it (n can be large).
    let sd = (n as f64 * q * (1.0 - q)).sqrt();
    let centre = n as f64 * q;
    let mut l = ((centre - 3.0 * sd).floor().max(1.0) as usize).min(n);
    while l < n && binomial_cdf(l, n, q) <= tail {
        l += 1;
    }
    // Here P(B <= l) > tail: step back to the last rank that satisfies it.
    while l >= 1 && binomial_cdf(l - 1, n, q) > tail {
        l -= 1;
    }
    let mut u = ((centre + 3.0 * sd).ceil() as usize).clamp(1, n);
    while u > 1 && 1.0 - binomial_cdf(u - 2, n, q) <= tail {
        u -= 1;
    }
    while u <= n && 1.0 - binomial_cdf(u - 1, n, q) > tail {
        u += 1;
    }
    if l == 0 || u > n {
        return None;
    }
    let below = if l >= 2 {
        binomial_cdf(l - 1, n, q)
    } else {
        0.0
    };
    let above = 1.0 - binomial_cdf(u - 1, n, q);
    Some((l, u, 1.0 - below - above))
}

/// The order-statistic interval of the `q` quantile of `sorted` (ascending).
pub fn quantile_interval(sorted: &[f64], q: f64, confidence: f64) -> Option<Interval> {
    let (l, u, c) = quantile_ranks(sorted.len(), q, confidence)?;
    Some(Interval {
        lo: sorted[l - 1],
        hi: sorted[u - 1],
        confidence: c,
    })
}

/// An interval for the median of per-round values: the order-statistic interval at 95 %
/// when there are enough rounds (6+), otherwise `[min, max]` with its exact confidence
/// (1 - 2^(1-R): 75 % at 3 rounds, 93.75 % at 5); `None` with fewer than 2 rounds.
pub fn median_interval(values: &[f64]) -> Option<Interval> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    if let Some(i) = quantile_interval(&v, 0.5, 0.95) {
        return Some(i);
    }
    let n = v.len();
    Some(Interval {
        lo: v[0],
        hi: v[n - 1],
        confidence: 1.0 - 2.0 * 0.5f64.powi(i32::try_from(n).unwrap_or(i32::MAX)),
    })
}

/// An interval for `a / b` from intervals of `a` and `b` (independent samples): at least
/// `ca + cb - 1` confidence (Bonferroni).
pub fn ratio_interval(a: Interval, b: Interval) -> Option<Interval> {
    if b.lo <= 0.0 || b.hi <= 0.0 {
        return None;
    }
    Some(Interval {
        lo: a.lo / b.hi,
        hi: a.hi / b.lo,
        confidence: (a.confidence + b.confidence - 1.0).max(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_cdf_matches_small_cases() {
        // Binomial(4, 0.5): P(X <= 0) = 1/16, P(X <= 1) = 5/16, P(X <= 3) = 15/16.
        assert!((binomial_cdf(0, 4, 0.5) - 1.0 / 16.0).abs() < 1e-12);
        assert!((binomial_cdf(1, 4, 0.5) - 5.0 / 16.0).abs() < 1e-12);
        assert!((binomial_cdf(3, 4, 0.5) - 15.0 / 16.0).abs() < 1e-12);
        assert_eq!(binomial_cdf(4, 4, 0.5), 1.0);
    }

    #[test]
    fn p99_interval_of_ten_thousand_brackets_the_p99_and_has_its_confidence() {
        let v: Vec<f64> = (1..=10_000).map(f64::from).collect();
        let i = quantile_interval(&v, 0.99, 0.95);
        let i = i.unwrap_or(Interval {
            lo: 0.0,
            hi: 0.0,
            confidence: 0.0,
        });
        // n q = 9900, sd ~ 9.95: about ±20 ranks at 95 %.
        assert!(i.lo < 9900.0 && i.hi > 9900.0, "{i:?}");
        assert!(i.lo >= 9875.0 && i.hi <= 9925.0, "{i:?}");
        assert!(i.confidence >= 0.95 && i.confidence < 0.97, "{i:?}");
    }

    #[test]
    fn too_few_samples_for_a_p99_interval_say_so() {
        // 50 samples: even the maximum is below the true p99 with probability 0.99^50 = 0.6.
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(quantile_interval(&v, 0.99, 0.95), None);
    }

    #[test]
    fn median_of_few_rounds_is_min_max_with_exact_confidence() {
        let i = median_interval(&[1.2, 1.0, 1.1]);
        assert_eq!(i.map(|i| (i.lo, i.hi)), Some((1.0, 1.2)));
        assert_eq!(i.map(|i| i.confidence), Some(0.75));
        assert_eq!(median_interval(&[1.0]), None);
        // 9 rounds: 95 % gives ranks 2..8 (96 %) rather than min..max.
        let v: Vec<f64> = (1..=9).map(f64::from).collect();
        let i = median_interval(&v);
        assert_eq!(i.map(|i| (i.lo, i.hi)), Some((2.0, 8.0)));
    }

    #[test]
    fn ratio_interval_divides_crosswise() {
        let a = Interval {
            lo: 100.0,
            hi: 120.0,
            confidence: 0.975,
        };
        let b = Interval {
            lo: 90.0,
            hi: 100.0,
            confidence: 0.975,
        };
        let r = ratio_interval(a, b);
        assert_eq!(r.map(|r| (r.lo, r.hi)), Some((1.0, 120.0 / 90.0)));
        assert!(r.is_some_and(|r| (r.confidence - 0.95).abs() < 1e-12));
    }
}
