//! Human output: colour only on a terminal and never with `NO_COLOR`, and
//! the live progress printer used by `wfhost run` (what steps and models
//! wrote is printed through `terminal_safe`).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::say;

use super::terminal::{error_line, terminal_safe};
use crate::engine::{RunEvent, RunListener};
use crate::step::executor::LogLevel;
use crate::store::RunStatus;

/// ANSI styling that switches itself off when it should.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    enabled: bool,
}

impl Style {
    /// Styling for stderr (where progress goes).
    pub fn for_stderr() -> Style {
        Style {
            enabled: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// Styling for stdout.
    pub fn for_stdout() -> Style {
        Style {
            enabled: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Green.
    pub fn ok(&self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Red.
    pub fn bad(&self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Yellow.
    pub fn warn(&self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Dim.
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    /// Bold.
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// A status word coloured by its meaning.
    pub fn status(&self, status: &str) -> String {
        match status {
            "completed" => self.ok(status),
            "failed" => self.bad(status),
            "skipped" | "pending" => self.dim(status),
            "running" => self.warn(status),
            _ => status.to_string(),
        }
    }
}

/// Prints run events to stderr as they happen. On a terminal, the running
/// steps also stay listed at the bottom (a live area redrawn as they go:
/// each with its time so far and the last line it wrote).
pub struct ProgressPrinter {
    style: Style,
    show_logs: bool,
    board: Option<Arc<Mutex<Board>>>,
}

/// The running steps of the live area.
#[derive(Default)]
struct Board {
    /// Step, when it started, the last line it wrote; in start order.
    running: Vec<(String, Instant, String)>,
    finished: bool,
}

/// How often the live area is redrawn (elapsed times, the spinner).
const REDRAW: Duration = Duration::from_millis(200);

impl Board {
    fn lines(&self) -> Vec<String> {
        const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let width = say::terminal_width()
            .unwrap_or(80)
            .saturating_sub(1)
            .max(20);
        self.running
            .iter()
            .map(|(step, started, last)| {
                let elapsed = started.elapsed();
                let frame = SPINNER[(elapsed.as_millis() / 100) as usize % SPINNER.len()];
                let seconds = elapsed.as_secs();
                let time = if seconds < 60 {
                    format!("{seconds}s")
                } else {
                    crate::step::units::humanize(Duration::from_secs(seconds))
                };
                let mut line = format!("  {frame} {step} {time}");
                if !last.is_empty() {
                    line.push_str(&format!("  │ {last}"));
                }
                fit(&line, width)
            })
            .collect()
    }
}

/// `line` cut to at most `columns` terminal columns, counting every
/// non-ASCII character as two (wide characters would otherwise wrap the
/// line and break the redraw of the live area).
fn fit(line: &str, columns: usize) -> String {
    let mut used = 0;
    line.chars()
        .take_while(|c| {
            used += if c.is_ascii() { 1 } else { 2 };
            used <= columns
        })
        .collect()
}

impl ProgressPrinter {
    /// A printer; `show_logs` also echoes step log lines.
    pub fn new(show_logs: bool) -> ProgressPrinter {
        let live = std::io::stderr().is_terminal()
            && std::env::var("TERM").map_or(true, |term| term != "dumb");
        let board = live.then(|| {
            let board = Arc::new(Mutex::new(Board::default()));
            let weak = Arc::downgrade(&board);
            std::thread::spawn(move || loop {
                std::thread::sleep(REDRAW);
                let Some(board) = weak.upgrade() else { return };
                let board = board.lock().unwrap_or_else(|e| e.into_inner());
                if board.finished {
                    return;
                }
                say::set_live(board.lines());
            });
            board
        });
        ProgressPrinter {
            style: Style::for_stderr(),
            show_logs,
            board,
        }
    }

    /// Keep the live area up to date with `event`.
    fn track(&self, event: &RunEvent) {
        let Some(board) = &self.board else { return };
        let mut board = board.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            RunEvent::StepStarted { step, .. } => {
                board.running.retain(|(id, _, _)| id != step);
                board
                    .running
                    .push((step.clone(), Instant::now(), String::new()));
            }
            RunEvent::StepCompleted { step, .. }
            | RunEvent::StepFailed { step, .. }
            | RunEvent::StepRetrying { step, .. }
            | RunEvent::StepSkipped { step, .. } => {
                board.running.retain(|(id, _, _)| id != step);
            }
            RunEvent::Log { step, message, .. } => {
                let line = terminal_safe(message);
                let line = line.lines().last().unwrap_or_default().trim();
                if let Some(entry) = board.running.iter_mut().find(|(id, _, _)| id == step) {
                    if !line.is_empty() {
                        entry.2 = line.to_string();
                    }
                }
            }
            RunEvent::Finished { .. } => {
                board.running.clear();
                board.finished = true;
            }
            _ => {}
        }
        say::set_live(board.lines());
    }
}

impl Drop for ProgressPrinter {
    fn drop(&mut self) {
        if let Some(board) = &self.board {
            board.lock().unwrap_or_else(|e| e.into_inner()).finished = true;
            say::set_live(Vec::new());
        }
    }
}

impl RunListener for ProgressPrinter {
    fn on_event(&self, event: &RunEvent) {
        self.print(event);
        self.track(event);
    }
}

impl ProgressPrinter {
    fn print(&self, event: &RunEvent) {
        let s = &self.style;
        let line = match event {
            RunEvent::Started { run_id, steps } => {
                format!("{} {} ({steps} steps)", s.bold("run"), s.bold(run_id))
            }
            RunEvent::StepStarted { step, attempt } if *attempt > 1 => {
                format!("  {} {step} (attempt {attempt})", s.warn("▶"))
            }
            RunEvent::StepStarted { step, .. } => format!("  {} {step}", s.warn("▶")),
            RunEvent::StepCompleted { step, elapsed } => format!(
                "  {} {step} {}",
                s.ok("✓"),
                s.dim(&crate::step::units::humanize(*elapsed))
            ),
            RunEvent::StepFailed { step, error } => {
                format!("  {} {step}: {}", s.bad("✗"), s.bad(&error_line(error)))
            }
            RunEvent::StepRetrying {
                step,
                attempt,
                max_attempts,
                delay,
                error,
            } => {
                let first = error_line(error);
                format!(
                    "  {} {step}: attempt {attempt}/{max_attempts} failed: {first}; retrying in {}",
                    s.warn("↻"),
                    crate::step::units::humanize(*delay)
                )
            }
            RunEvent::Cancelling => format!(
                "{} cancel requested: running steps stopped; cleanup steps still run",
                s.bad("■")
            ),
            RunEvent::Pausing => format!(
                "{} pause requested: waiting for running steps to finish",
                s.warn("‖")
            ),
            RunEvent::StepSkipped { step, reason } => {
                format!(
                    "  {} {step} {}",
                    s.dim("○"),
                    s.dim(&format!("skipped: {}", terminal_safe(reason)))
                )
            }
            RunEvent::Log {
                step,
                level,
                message,
            } if self.show_logs => {
                let text = format!("    {step} │ {}", terminal_safe(message));
                match level {
                    LogLevel::Warn | LogLevel::Error => s.warn(&text),
                    _ => s.dim(&text),
                }
            }
            RunEvent::Log { .. } => return,
            RunEvent::Finished { status } => {
                let word = status.as_str();
                let painted = if matches!(
                    status,
                    RunStatus::Completed | RunStatus::Paused | RunStatus::CompletedWithErrors
                ) {
                    s.ok(word)
                } else {
                    s.bad(word)
                };
                format!("{} {painted}", s.bold("run"))
            }
        };
        super::say::err_line(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_line_never_wraps() {
        assert_eq!(fit("abcdef", 4), "abcd");
        assert_eq!(fit("日本語テキスト", 5), "日本");
        assert_eq!(fit("ok", 10), "ok");
    }
}
