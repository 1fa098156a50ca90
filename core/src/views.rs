//! View filters: comma-separated frame numbers and inclusive ranges, e.g. `"1-11,30-45,108-118,138-143"`.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("view filter `{text}`: {reason}; write frame numbers and inclusive ranges like \"1-11,30-45\"")]
pub struct ViewFilterError {
    pub text: String,
    pub reason: String,
}

/// A set of view (frame) numbers; empty text means every view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ViewFilter {
    views: Option<BTreeSet<u32>>,
}

impl ViewFilter {
    pub fn parse(text: &str) -> Result<Self, ViewFilterError> {
        let err = |reason: String| ViewFilterError { text: text.to_string(), reason };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut views = BTreeSet::new();
        for part in text.split(',') {
            let part = part.trim();
            let number = |s: &str| s.trim().parse::<u32>().map_err(|_| err(format!("`{s}` is not a frame number")));
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (number(lo)?, number(hi)?);
                    if lo > hi {
                        return Err(err(format!("range {lo}-{hi} runs backwards")));
                    }
                    if hi - lo > 1_000_000 {
                        return Err(err(format!("range {lo}-{hi} is implausibly large")));
                    }
                    views.extend(lo..=hi);
                }
                None => {
                    views.insert(number(part)?);
                }
            }
        }
        Ok(Self { views: Some(views) })
    }

    pub fn contains(&self, frame: u32) -> bool {
        self.views.as_ref().is_none_or(|v| v.contains(&frame))
    }

    /// Number of views kept, or `None` for "all".
    pub fn len(&self) -> Option<usize> {
        self.views.as_ref().map(BTreeSet::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
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
    fn table_of_bad_filters() {
        for (text, want) in [("1-", "not a frame number"), ("a", "not a frame number"), ("9-3", "backwards"), ("1,,2", "not a frame number"), ("-4", "not a frame number"), ("0-4294967295", "implausibly large")] {
            let msg = ViewFilter::parse(text).unwrap_err().to_string();
            assert!(msg.contains(want), "{text}: {msg}");
        }
    }
}
