//! View filters: comma-separated frame numbers and inclusive ranges, e.g. `"1-11,30-45,108-118,138-143"`.
//!
//! A filter is kept as sorted, disjoint inclusive ranges rather than a set of frames, so its cost
//! follows the length of the text, never the numbers in it: `1-4000000000` is one range, and
//! thousands of overlapping ranges merge into a few.

use std::ops::RangeInclusive;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("view filter `{text}`: {reason}; write frame numbers and inclusive ranges like \"1-11,30-45\"")]
pub struct ViewFilterError {
    pub text: String,
    pub reason: String,
}

/// A set of view (frame) numbers; empty text means every view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ViewFilter {
    /// Sorted, disjoint and non-adjacent (`1-3,4-5` is stored as `1-5`), so equal sets compare equal.
    ranges: Option<Vec<RangeInclusive<u32>>>,
}

impl ViewFilter {
    pub fn parse(text: &str) -> Result<Self, ViewFilterError> {
        let err = |reason: String| ViewFilterError { text: text.to_string(), reason };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let number = |s: &str| s.trim().parse::<u32>().map_err(|_| err(format!("`{}` is not a frame number (0 to {})", s.trim(), u32::MAX)));
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (number(lo)?, number(hi)?);
                    if lo > hi {
                        return Err(err(format!("range {lo}-{hi} runs backwards")));
                    }
                    ranges.push(lo..=hi);
                }
                None => {
                    let frame = number(part)?;
                    ranges.push(frame..=frame);
                }
            }
        }
        ranges.sort_unstable_by_key(|r| *r.start());
        let mut merged: Vec<RangeInclusive<u32>> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                // Overlapping or touching: widen the last range (u64 so `…-4294967295` cannot wrap).
                Some(last) if u64::from(*range.start()) <= u64::from(*last.end()) + 1 => {
                    *last = *last.start()..=(*last.end()).max(*range.end());
                }
                _ => merged.push(range),
            }
        }
        Ok(Self { ranges: Some(merged) })
    }

    pub fn contains(&self, frame: u32) -> bool {
        let Some(ranges) = &self.ranges else { return true };
        // The first range ending at or after `frame` is the only one that can hold it.
        let at = ranges.partition_point(|r| *r.end() < frame);
        ranges.get(at).is_some_and(|r| r.contains(&frame))
    }

    /// Number of views kept, or `None` for "all".
    pub fn len(&self) -> Option<usize> {
        let count = |ranges: &Vec<RangeInclusive<u32>>| ranges.iter().map(|r| u64::from(*r.end()) - u64::from(*r.start()) + 1).sum::<u64>();
        // At most 2^32 views, which fits usize on every 64-bit target.
        self.ranges.as_ref().map(|ranges| usize::try_from(count(ranges)).unwrap_or(usize::MAX))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The kept views as sorted, disjoint inclusive ranges, or `None` for "all".
    pub fn ranges(&self) -> Option<&[RangeInclusive<u32>]> {
        self.ranges.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acusim_paper_filter_keeps_44_views() {
        let f = ViewFilter::parse("1-11,30-45,108-118,138-143").unwrap();
        assert_eq!(f.len(), Some(44));
        assert!(f.contains(1) && f.contains(11) && f.contains(143) && !f.contains(0) && !f.contains(12));
        assert_eq!(ViewFilter::parse("").unwrap().len(), None);
        assert!(ViewFilter::parse(" ").unwrap().contains(999));
        assert_eq!(ViewFilter::parse("5, 7 ,5").unwrap().len(), Some(2));
    }

    #[test]
    fn overlapping_and_touching_ranges_merge() {
        let f = ViewFilter::parse("4-5,1-3,2,7").unwrap();
        assert_eq!(f.ranges(), Some(&[1..=5, 7..=7][..]));
        assert_eq!(f, ViewFilter::parse("1-5,7").unwrap());
        assert_eq!(ViewFilter::parse("4294967295,0-4294967294").unwrap().ranges(), Some(&[0..=u32::MAX][..]));
    }

    #[test]
    fn huge_ranges_cost_nothing() {
        // Each of these once materialised every frame (or was refused); now they are a few ranges.
        let f = ViewFilter::parse("1-4000000000").unwrap();
        assert_eq!(f.len(), Some(4_000_000_000));
        assert!(f.contains(3_999_999_999) && !f.contains(4_000_000_001) && !f.contains(0));
        assert_eq!(ViewFilter::parse("0-4294967295").unwrap().len(), Some(1 << 32));
        let many = vec!["0-1000000"; 100_000].join(",");
        assert_eq!(ViewFilter::parse(&many).unwrap().ranges(), Some(&[0..=1_000_000][..]));
        let spread: Vec<String> = (0..100_000u32).map(|i| format!("{}-{}", i * 40_000, i * 40_000 + 30_000)).collect();
        assert_eq!(ViewFilter::parse(&spread.join(",")).unwrap().len(), Some(100_000 * 30_001));
    }

    #[test]
    fn table_of_bad_filters() {
        for (text, want) in [
            ("1-", "not a frame number"),
            ("a", "not a frame number"),
            ("9-3", "backwards"),
            ("1,,2", "not a frame number"),
            ("-4", "not a frame number"),
            ("4294967296", "`4294967296` is not a frame number (0 to 4294967295)"),
            ("1-2-3", "`2-3` is not a frame number"),
        ] {
            let msg = ViewFilter::parse(text).unwrap_err().to_string();
            assert!(msg.contains(want), "{text}: {msg}");
        }
    }
}
