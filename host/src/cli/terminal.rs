//! Making untrusted text safe to print on a terminal. What a model writes
//! (tool names, arguments, prompts, notes) reaches the approvals CLI and
//! `wfhost status`; escape sequences in it could clear lines, move the
//! cursor, rewrite the window title or forge what a person approves.

use std::borrow::Cow;
use std::iter::Peekable;
use std::str::Chars;

const ESC: char = '\u{1b}';
const BEL: char = '\u{7}';
/// C1 "string terminator".
const ST: char = '\u{9c}';

/// `text` without terminal control sequences: ESC sequences (CSI, OSC,
/// DCS, SOS, PM, APC and the short ones), their C1 forms, every other C0
/// and C1 control character except newline and tab, and DEL. Text without
/// any is returned as is.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            ESC => skip_escape(&mut chars),
            // C1 CSI.
            '\u{9b}' => skip_csi(&mut chars),
            // C1 DCS, SOS, OSC, PM, APC: a string up to its terminator.
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if is_control(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One line that says what an error was: its first line, and when that
/// ends with a colon (`script exited with code 2:` followed by the stderr
/// tail) the last non-empty line after it too, so the line never ends in
/// a dangling colon. Control sequences removed.
pub fn error_line(error: &str) -> String {
    let error = terminal_safe(error);
    let mut lines = error.lines().map(str::trim_end).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    match (first.strip_suffix(':'), lines.next_back()) {
        (Some(head), Some(last)) => format!("{head}: {}", last.trim_start()),
        (Some(head), None) => head.to_string(),
        (None, _) => first.to_string(),
    }
}

/// `text` on one line for a terminal: control sequences removed, line
/// breaks shown as `⏎`, cut to `max` characters (with `…`).
pub fn safe_line(text: &str, max: usize) -> String {
    let safe = terminal_safe(text).replace('\n', "⏎").replace('\t', " ");
    if safe.chars().count() <= max {
        return safe;
    }
    let mut cut: String = safe.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Whether `c` is a C0 or C1 control or DEL, other than newline and tab.
fn is_control(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}'
}

/// After an ESC: skip the rest of its sequence.
fn skip_escape(chars: &mut Peekable<Chars<'_>>) {
    match chars.peek().copied() {
        Some('[') => {
            chars.next();
            skip_csi(chars);
        }
        Some(']' | 'P' | 'X' | '^' | '_') => {
            chars.next();
            skip_string(chars);
        }
        // nF: intermediates, then one final byte.
        Some('\u{20}'..='\u{2f}') => {
            while chars
                .next_if(|c| ('\u{20}'..='\u{2f}').contains(c))
                .is_some()
            {}
            chars.next_if(|c| ('\u{30}'..='\u{7e}').contains(c));
        }
        // Fp, Fe, Fs: one byte.
        Some('\u{30}'..='\u{7e}') => {
            chars.next();
        }
        _ => {}
    }
}

/// After a CSI: parameter and intermediate bytes, then one final byte.
fn skip_csi(chars: &mut Peekable<Chars<'_>>) {
    while chars
        .next_if(|c| ('\u{20}'..='\u{3f}').contains(c))
        .is_some()
    {}
    chars.next_if(|c| ('\u{40}'..='\u{7e}').contains(c));
}

/// After an OSC, DCS, SOS, PM or APC: everything up to BEL, ST or ESC `\`
/// (or the end of the text).
fn skip_string(chars: &mut Peekable<Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            BEL | ST => return,
            ESC => {
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_never_ends_in_a_dangling_colon() {
        assert_eq!(
            error_line("script exited with code 2:\nfirst\nls: cannot open '.'\n\n"),
            "script exited with code 2: ls: cannot open '.'"
        );
        assert_eq!(error_line("boom\nmore"), "boom");
        assert_eq!(error_line("ends here:"), "ends here");
        assert_eq!(error_line("\x1b[2Kred:\n\x1b[31mx"), "red: x");
        assert_eq!(error_line(""), "");
    }

    #[test]
    fn plain_text_newlines_and_tabs_pass_unchanged() {
        let text = "rm -rf build\n\tand ünïcode ✓";
        assert!(matches!(terminal_safe(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn escape_sequences_and_controls_are_removed() {
        for (input, expected) in [
            // CSI: colour, clear line, cursor up.
            ("\x1b[31mred\x1b[0m", "red"),
            ("ls\x1b[2K\x1b[1Arm -rf /", "lsrm -rf /"),
            ("a\x1b[?25lb", "ab"),
            // OSC: window title (BEL and ST ends), hyperlink.
            ("\x1b]0;pwned\x07ok", "ok"),
            ("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"),
            // DCS, APC, an unterminated OSC to the end.
            ("a\x1bPq#0\x1b\\b", "ab"),
            ("a\x1b_hidden\x1b\\b", "ab"),
            ("a\x1b]0;never ends", "a"),
            // Short escapes: charset (nF), keypad (Fp), RIS (Fs).
            ("a\x1b(0b\x1b=c\x1bcd", "abcd"),
            // C1 forms.
            ("a\u{9b}2Jb\u{9d}title\u{9c}c\u{85}d", "abcd"),
            // Other C0 controls and DEL; a lone ESC at the end.
            ("a\rb\x08c\x00d\x7fe\x07f\x1b", "abcdef"),
        ] {
            assert_eq!(terminal_safe(input), expected, "{input:?}");
        }
    }

    #[test]
    fn newlines_and_tabs_inside_text_are_kept() {
        assert_eq!(
            terminal_safe("line 1\x1b[0m\n\tline 2\r\n"),
            "line 1\n\tline 2\n"
        );
    }
}
