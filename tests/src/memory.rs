//! This process's resident memory, for the benchmarks that report it.

/// The peak resident size so far (`VmHWM`), in KiB.
pub fn peak_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Resets the peak to the current resident size (Linux 4.0 and later),
/// and returns that size in KiB: what follows is measured alone.
pub fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs (Linux 4.0 and later)");
    status_kib("VmRSS:")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
