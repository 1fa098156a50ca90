//! Any view filter text: parsing never panics and costs what the text costs (no materialised
//! frames); an accepted filter is sorted, disjoint ranges that hold every frame the text names.
#![no_main]

use acufarm_core::views::ViewFilter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(filter) = ViewFilter::parse(text) else { return };
    let Some(ranges) = filter.ranges() else {
        assert!(text.trim().is_empty() && filter.contains(0) && filter.contains(u32::MAX));
        return;
    };
    for pair in ranges.windows(2) {
        assert!(u64::from(*pair[0].end()) + 1 < u64::from(*pair[1].start()), "{text:?}: {ranges:?} not sorted and disjoint");
    }
    let count: u64 = ranges.iter().map(|r| u64::from(*r.end()) - u64::from(*r.start()) + 1).sum();
    assert_eq!(filter.len().map(|n| n as u64), Some(count));
    for part in text.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (u32, u32) = (lo.trim().parse().expect("accepted"), hi.trim().parse().expect("accepted"));
        assert!(filter.contains(lo) && filter.contains(hi) && filter.contains(lo + (hi - lo) / 2), "{text:?} lost part {part:?}");
    }
    for r in ranges {
        assert!(r.start().checked_sub(1).is_none_or(|f| !filter.contains(f)), "{text:?}: {r:?}");
        assert!(r.end().checked_add(1).is_none_or(|f| !filter.contains(f)), "{text:?}: {r:?}");
    }
});
