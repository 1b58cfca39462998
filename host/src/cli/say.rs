//! Printing that never panics: `println!` and `eprintln!` panic when their
//! stream is gone (`wfhost run … | head -3`, a closed terminal), and a
//! process driving a run must go on driving it. These write what they can
//! and drop the rest.
//!
//! On a terminal, `wfhost run` keeps a live area at the bottom of stderr
//! (the running steps, see [`set_live`]); every line written through
//! [`err_line`] goes above it, so the area never mixes with other output.

use std::io::Write;
use std::sync::Mutex;

/// The live area: its lines, and how many of them are on the screen now.
struct Live {
    lines: Vec<String>,
    shown: usize,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    lines: Vec::new(),
    shown: 0,
});

/// Write `text` and a newline to stdout; a closed stdout is ignored.
pub fn out_line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

/// Write `text` and a newline to stderr, above the live area if one is
/// shown; a closed stderr is ignored.
pub fn err_line(text: &str) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let mut stderr = std::io::stderr().lock();
    let mut buffer = erase(live.shown);
    buffer.push_str(text);
    buffer.push('\n');
    buffer.push_str(&draw(&live.lines));
    live.shown = live.lines.len();
    let _ = stderr.write_all(buffer.as_bytes());
    let _ = stderr.flush();
}

/// Replace the live area at the bottom of stderr with `lines` (each kept
/// to one terminal row by the caller); an empty list removes it. Only for
/// a terminal.
pub fn set_live(lines: Vec<String>) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let mut buffer = erase(live.shown);
    buffer.push_str(&draw(&lines));
    live.shown = lines.len();
    live.lines = lines;
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(buffer.as_bytes());
    let _ = stderr.flush();
}

/// Move the cursor up over `rows` rows and clear to the end of the screen.
fn erase(rows: usize) -> String {
    if rows == 0 {
        String::new()
    } else {
        format!("\x1b[{rows}F\x1b[J")
    }
}

fn draw(lines: &[String]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// Columns of the terminal on stderr, if it is one.
pub fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills the winsize it is given; a non-terminal
    // makes it fail, which is checked.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        (libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) == 0 && size.ws_col > 0)
            .then_some(size.ws_col as usize)
    }
}
