//! Printing that never panics: `println!` and `eprintln!` panic when their
//! stream is gone (`wfhost run … | head -3`, a closed terminal), and a
//! process driving a run must go on driving it. These write what they can
//! and drop the rest.

use std::io::Write;

/// Write `text` and a newline to stdout; a closed stdout is ignored.
pub fn out_line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

/// Write `text` and a newline to stderr; a closed stderr is ignored.
pub fn err_line(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}
