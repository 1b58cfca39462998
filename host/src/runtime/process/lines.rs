//! Live output: a program's stdout and stderr cut into lines for the step's
//! log as they are written (`process.run-streamed`).

use std::sync::Arc;

use crate::step::executor::{LogLevel, StepObserver};

/// The longest line passed on whole; a longer run of bytes without a line
/// break is passed on in pieces of this size, so a program that never
/// writes `\n` neither grows a buffer nor stays invisible.
pub(super) const MAX_LINE: usize = 16 * 1024;

/// Where complete lines go.
pub(super) type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A sink that logs each line at `level` to the step's log.
pub(super) fn step_log(observer: Arc<dyn StepObserver>, level: LogLevel) -> LineSink {
    Arc::new(move |line: &str| observer.log(level, line))
}

/// Cuts a byte stream into lines: `\n` ends a line (a `\r` before it is
/// dropped), invalid UTF-8 is replaced, and what is left at the end is
/// flushed by [`LineSplitter::finish`].
pub(super) struct LineSplitter {
    sink: LineSink,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub(super) fn new(sink: LineSink) -> LineSplitter {
        LineSplitter {
            sink,
            pending: Vec::new(),
        }
    }

    /// Take the next bytes read; passes on every line they complete.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.take(&bytes[..end]);
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.take(bytes);
    }

    /// The stream ended: pass on an unfinished last line.
    pub(super) fn finish(&mut self) {
        if !self.pending.is_empty() {
            self.emit();
        }
    }

    fn take(&mut self, mut bytes: &[u8]) {
        while self.pending.len() + bytes.len() > MAX_LINE {
            let room = MAX_LINE - self.pending.len();
            self.pending.extend_from_slice(&bytes[..room]);
            self.emit();
            bytes = &bytes[room..];
        }
        self.pending.extend_from_slice(bytes);
    }

    fn emit(&mut self) {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        (self.sink)(&String::from_utf8_lossy(&self.pending));
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let mut splitter = LineSplitter::new(Arc::new(move |line: &str| {
            seen.lock().unwrap().push(line.to_string())
        }));
        for chunk in chunks {
            splitter.feed(chunk);
        }
        splitter.finish();
        let lines = lines.lock().unwrap().clone();
        lines
    }

    #[test]
    fn lines_are_cut_across_reads_and_the_last_one_is_flushed() {
        assert_eq!(
            split(&[b"one\ntw", b"o\r\n\nthr", b"ee"]),
            ["one", "two", "", "three"]
        );
        assert!(split(&[b""]).is_empty());
        assert_eq!(split(&[b"\xffa\n"]), ["\u{fffd}a"]);
    }

    #[test]
    fn a_line_without_end_is_passed_on_in_bounded_pieces() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let lines = split(&[&long[..10], &long[10..]]);
        assert_eq!(
            lines.iter().map(String::len).collect::<Vec<_>>(),
            [MAX_LINE, MAX_LINE, 5]
        );
    }
}
