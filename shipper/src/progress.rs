//! Progress of a long transfer: a line redrawn in place on a terminal, a
//! log line every ten seconds otherwise.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(10);
const DRAW_EVERY: Duration = Duration::from_millis(250);

pub(crate) struct Progress {
    what: &'static str,
    terminal: bool,
    started: Instant,
    last: Mutex<Option<Instant>>,
}

impl Progress {
    pub(crate) fn new(what: &'static str, terminal: bool) -> Progress {
        Progress {
            what,
            terminal,
            started: Instant::now(),
            last: Mutex::new(None),
        }
    }

    pub(crate) fn update(&self, done: u64, total: Option<u64>) {
        if self.due() {
            self.show(&self.line(done, total));
        }
    }

    /// Whether a line is due (a redraw every 250 ms on a terminal, a log
    /// line every ten seconds otherwise); if so, it counts as shown.
    fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let every = if self.terminal { DRAW_EVERY } else { LOG_EVERY };
        if last.is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn show(&self, text: &str) {
        if self.terminal {
            eprint!("\r{text}\x1b[K");
            let _ = std::io::stderr().flush();
        } else {
            tracing::info!("{text}");
        }
    }

    /// `count` since the start, per second.
    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.started.elapsed().as_secs_f64().max(0.001)
    }

    /// Progress counted in files (each holding some bytes): what a run of
    /// many small requests reports.
    pub(crate) fn update_files(&self, files: u64, total_files: u64, bytes: u64, total_bytes: u64) {
        if !self.due() {
            return;
        }
        let rate = self.per_second(files);
        let mut text = format!(
            "{}: {files}/{total_files} files, {} of {}, {rate:.0} files/s",
            self.what,
            human_bytes(bytes),
            human_bytes(total_bytes),
        );
        if total_files > 0 && files < total_files {
            let eta = (total_files - files) as f64 / rate.max(0.1);
            text.push_str(&format!(", ETA {}", duration(eta)));
        }
        self.show(&text);
    }

    pub(crate) fn finish(&self) {
        if self.terminal && self.last.lock().is_ok_and(|l| l.is_some()) {
            eprintln!();
        }
    }

    fn line(&self, done: u64, total: Option<u64>) -> String {
        let rate = self.per_second(done);
        let mut line = format!(
            "{}: {}, {}/s",
            self.what,
            human_bytes(done),
            human_bytes(rate as u64)
        );
        if let Some(total) = total.filter(|t| *t >= done && *t > 0) {
            let eta = (total - done) as f64 / rate.max(1.0);
            line.push_str(&format!(
                " of {} ({:.0}%), ETA {}",
                human_bytes(total),
                done as f64 * 100.0 / total as f64,
                duration(eta)
            ));
        }
        line
    }
}

/// Bytes in binary units, one decimal.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(duration(59.4), "59s");
        assert_eq!(duration(61.0), "1m01s");
        assert_eq!(duration(7322.0), "2h02m");
        let progress = Progress::new("restore", false);
        assert!(progress.line(512, Some(1024)).contains("of 1.0 KiB (50%)"));
    }
}
