//! The matchers behind rule specifiers: path globs, command patterns and
//! domains.

/// Lexically normalised path, relative to the workflow directory unless it
/// is absolute: `.` and empty segments dropped, `..` folded (a leading `..`
/// that climbs out of the directory is kept). `""` is the directory itself.
pub fn normalize_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                // `/..` is `/`.
                _ if absolute => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Make `path` (normalised) relative to `workdir` when it lies under it.
pub fn relative_to(path: &str, workdir: &str) -> Option<String> {
    let workdir = normalize_path(workdir);
    if !workdir.starts_with('/') || !path.starts_with('/') {
        return None;
    }
    if path == workdir {
        return Some(String::new());
    }
    let prefix = if workdir == "/" {
        "/".to_string()
    } else {
        format!("{workdir}/")
    };
    path.strip_prefix(&prefix).map(str::to_string)
}

/// A path glob: segments separated by `/`; `**` is any number of segments
/// (zero included), `*` any characters within a segment, `?` one character.
/// Neither ever matches a `..` segment. Relative globs are relative to the
/// workflow directory and match only relative paths; a glob that starts
/// with `/` matches only absolute paths. A trailing `/` means `/**`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    absolute: bool,
    segments: Vec<String>,
}

impl PathGlob {
    /// Parse a glob; `None` when it is empty.
    pub fn new(glob: &str) -> Option<PathGlob> {
        let glob = glob.trim();
        if glob.is_empty() {
            return None;
        }
        let absolute = glob.starts_with('/');
        let dir_only = glob.ends_with('/');
        let normalized = normalize_path(glob);
        let mut segments: Vec<String> = normalized
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if dir_only || segments.is_empty() {
            segments.push("**".to_string());
        }
        Some(PathGlob { absolute, segments })
    }

    /// Whether the (normalised) `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        if path.starts_with('/') != self.absolute {
            return false;
        }
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let globs: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        match_segments(&globs, &parts)
    }
}

fn match_segments(globs: &[&str], parts: &[&str]) -> bool {
    // reachable[j]: the globs so far can consume exactly parts[..j].
    let mut reachable = vec![false; parts.len() + 1];
    reachable[0] = true;
    for glob in globs {
        let mut next = vec![false; parts.len() + 1];
        if *glob == "**" {
            let mut on = false;
            for j in 0..=parts.len() {
                if reachable[j] {
                    on = true;
                }
                next[j] = on;
                if j < parts.len() && parts[j] == ".." {
                    on = false;
                }
            }
        } else {
            for j in 0..parts.len() {
                let matched = if parts[j] == ".." {
                    // Only a literal `..` in the glob matches a `..` part.
                    *glob == ".."
                } else {
                    segment_matches(glob, parts[j])
                };
                if reachable[j] && matched {
                    next[j + 1] = true;
                }
            }
        }
        reachable = next;
    }
    reachable[parts.len()]
}

/// `*` (any run of characters) and `?` (one character) within one segment.
fn segment_matches(glob: &str, text: &str) -> bool {
    let g: Vec<char> = glob.chars().collect();
    let t: Vec<char> = text.chars().collect();
    wildcard(&g, &t, true)
}

/// Iterative wildcard match: `*` any run, `?` (when `question` is set) one
/// character, everything else literal.
fn wildcard(g: &[char], t: &[char], question: bool) -> bool {
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && (g[gi] == t[ti] && g[gi] != '*' || question && g[gi] == '?') {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ti));
            gi += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    while gi < g.len() && g[gi] == '*' {
        gi += 1;
    }
    gi == g.len()
}

/// A command pattern for `exec(...)`: words separated by whitespace, `*`
/// matching any characters but a newline (spaces included). A pattern ending in ` *` (or
/// the `:*` suffix) also matches the command without further arguments, so
/// `cargo test *` matches `cargo test` and `cargo test -p x`, but not
/// `cargo testing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPattern {
    pattern: Vec<char>,
    /// The pattern without its trailing ` *`, when it has one.
    bare: Option<String>,
}

impl CommandPattern {
    /// Parse a pattern; `None` when it is empty.
    pub fn new(pattern: &str) -> Option<CommandPattern> {
        let mut text = pattern.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some(prefix) = text.strip_suffix(":*") {
            text = format!("{} *", prefix.trim_end());
        }
        if text.is_empty() {
            return None;
        }
        let bare = text
            .strip_suffix(" *")
            .map(str::to_string)
            .filter(|b| !b.is_empty());
        Some(CommandPattern {
            pattern: text.chars().collect(),
            bare,
        })
    }

    /// Whether the command text (words joined by single spaces) matches.
    /// `*` never matches a newline, and a pattern (whitespace-normalised)
    /// holds none, so a command with a newline inside a word (`ls 'a⏎b'`)
    /// matches no pattern: at most a bare rule applies to it.
    pub fn matches(&self, command: &str) -> bool {
        if command.contains('\n') {
            return false;
        }
        if self.bare.as_deref() == Some(command) {
            return true;
        }
        let t: Vec<char> = command.chars().collect();
        wildcard(&self.pattern, &t, false)
    }
}

/// A host pattern for `http_get(domain:...)`: `docs.rs` matches exactly that
/// host; `*.docs.rs` matches its subdomains (`api.docs.rs`, not `docs.rs`).
/// Case-insensitive; a trailing dot is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPattern {
    host: String,
    subdomains: bool,
}

impl DomainPattern {
    /// Parse `docs.rs` or `*.docs.rs`; `None` when it is not a host name.
    pub fn new(pattern: &str) -> Option<DomainPattern> {
        let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        let (host, subdomains) = match pattern.strip_prefix("*.") {
            Some(rest) => (rest.to_string(), true),
            None => (pattern, false),
        };
        let valid = !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']')
            })
            && !host.starts_with('.')
            && !host.contains("..");
        valid.then_some(DomainPattern { host, subdomains })
    }

    /// Whether `host` (lowercase, from [`url_host`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        if self.subdomains {
            host.strip_suffix(&self.host)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
        } else {
            host == self.host
        }
    }
}

/// The host of an `http://` or `https://` URL, lowercase, without port,
/// user info or trailing dot. `None` for anything else or anything odd
/// (whitespace, control characters, percent-encoding in the host, an empty
/// host): such URLs match no domain rule.
pub fn url_host(url: &str) -> Option<String> {
    let url = url.trim();
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))?;
    // The authority ends at the first `/`, `\` (a path separator for
    // browsers and WHATWG URL parsers), `?` or `#`.
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        let close = v6.find(']')?;
        &host_port[..close + 2]
    } else {
        match host_port.rfind(':') {
            Some(colon) => {
                let port = &host_port[colon + 1..];
                if !port.chars().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                &host_port[..colon]
            }
            None => host_port,
        }
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.contains('%') {
        return None;
    }
    Some(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path("src/./a//b.rs"), "src/a/b.rs");
        assert_eq!(normalize_path("./src/"), "src");
        assert_eq!(normalize_path("."), "");
        assert_eq!(normalize_path(""), "");
        assert_eq!(normalize_path("src/../docs/x"), "docs/x");
        assert_eq!(normalize_path("src/../../x"), "../x");
        assert_eq!(normalize_path("../../x"), "../../x");
        assert_eq!(normalize_path("/a/b/../c"), "/a/c");
        assert_eq!(normalize_path("/../etc"), "/etc");
    }

    #[test]
    fn relativizes_under_a_workdir() {
        assert_eq!(relative_to("/w/f/src/a", "/w/f").as_deref(), Some("src/a"));
        assert_eq!(relative_to("/w/f", "/w/f/").as_deref(), Some(""));
        assert_eq!(relative_to("/w/fx/a", "/w/f"), None);
        assert_eq!(relative_to("src/a", "/w/f"), None);
        assert_eq!(relative_to("/etc/passwd", "/"), Some("etc/passwd".into()));
    }

    fn glob(g: &str, path: &str) -> bool {
        PathGlob::new(g).unwrap().matches(&normalize_path(path))
    }

    #[test]
    fn double_star_is_any_depth() {
        assert!(glob("src/**", "src/a.rs"));
        assert!(glob("src/**", "src/a/b/c.rs"));
        assert!(glob("src/**", "src"));
        assert!(glob("src/**", "./src/x"));
        assert!(!glob("src/**", "srcx/a"));
        assert!(!glob("src/**", "docs/a"));
        assert!(glob("**", "anything/at/all"));
        assert!(glob("**", "."));
        assert!(glob("**/*.rs", "a.rs"));
        assert!(glob("**/*.rs", "x/y/a.rs"));
        assert!(!glob("**/*.rs", "x/y/a.md"));
        assert!(glob("src/**/mod.rs", "src/mod.rs"));
        assert!(glob("src/**/mod.rs", "src/a/b/mod.rs"));
        assert!(!glob("src/**/mod.rs", "src/a/b/lib.rs"));
        assert!(glob("a/**/b/**/c", "a/x/b/y/z/c"));
    }

    #[test]
    fn single_star_stays_in_a_segment() {
        assert!(glob("docs/*", "docs/a.md"));
        assert!(!glob("docs/*", "docs/sub/a.md"));
        assert!(glob("docs/*.md", "docs/.hidden.md"));
        assert!(glob("*.md", "README.md"));
        assert!(!glob("*.md", "docs/README.md"));
        assert!(glob("src/?.rs", "src/a.rs"));
        assert!(!glob("src/?.rs", "src/ab.rs"));
        assert!(glob("docs/", "docs/a/b"));
        assert!(glob("README.md", "./README.md"));
        assert!(!glob("README.md", "README.mdx"));
    }

    #[test]
    fn globs_never_climb_out() {
        assert!(!glob("**", "../secret"));
        assert!(!glob("src/**", "src/../../secret"));
        assert!(glob("src/**", "src/../src/a"));
        assert!(!glob("*/x", "../x"));
        assert!(!glob("**/x", "../x"));
        assert!(!glob("**", "/etc/passwd"));
        // Explicit `..` and absolute globs work.
        assert!(glob("../shared/**", "../shared/a"));
        assert!(glob("/etc/**", "/etc/passwd"));
        assert!(!glob("/etc/**", "etc/passwd"));
    }

    fn cmd(p: &str, c: &str) -> bool {
        CommandPattern::new(p).unwrap().matches(c)
    }

    #[test]
    fn command_patterns() {
        assert!(!cmd("ls *", "ls a\nb"));
        assert!(!cmd("ls*", "ls\nrm x"));
        assert!(!cmd("*", "a\nb"));
        assert!(cmd("cargo test *", "cargo test -p x"));
        assert!(cmd("cargo test *", "cargo test"));
        assert!(!cmd("cargo test *", "cargo testing"));
        assert!(!cmd("cargo test *", "cargo build"));
        assert!(!cmd("cargo test *", "xcargo test"));
        assert!(cmd("cargo   test  *", "cargo test --all"));
        assert!(cmd("cargo test:*", "cargo test --all"));
        assert!(cmd("cargo test:*", "cargo test"));
        assert!(cmd("git status", "git status"));
        assert!(!cmd("git status", "git status -s"));
        assert!(cmd("git * --dry-run", "git push origin --dry-run"));
        assert!(!cmd("git * --dry-run", "git push origin"));
        assert!(cmd("*", "anything at all"));
        assert!(cmd("rm *", "rm -rf x"));
        assert!(!cmd("rm *", "rmdir x"));
        // `?` is literal in command patterns.
        assert!(!cmd("ls ?", "ls a"));
        assert!(CommandPattern::new("  ").is_none());
    }

    #[test]
    fn domains() {
        let exact = DomainPattern::new("docs.rs").unwrap();
        assert!(exact.matches("docs.rs"));
        assert!(!exact.matches("api.docs.rs"));
        assert!(!exact.matches("evildocs.rs"));
        let subs = DomainPattern::new("*.Docs.RS").unwrap();
        assert!(subs.matches("api.docs.rs"));
        assert!(subs.matches("a.b.docs.rs"));
        assert!(!subs.matches("docs.rs"));
        assert!(!subs.matches("evildocs.rs"));
        assert!(DomainPattern::new("").is_none());
        assert!(DomainPattern::new("a/b").is_none());
        assert!(DomainPattern::new("*.").is_none());
    }

    #[test]
    fn url_hosts() {
        let h = |u: &str| url_host(u);
        assert_eq!(h("https://docs.rs/serde").as_deref(), Some("docs.rs"));
        assert_eq!(h("HTTP://Docs.RS:443/x").as_deref(), Some("docs.rs"));
        assert_eq!(h("https://docs.rs.").as_deref(), Some("docs.rs"));
        assert_eq!(h("https://docs.rs?q=1").as_deref(), Some("docs.rs"));
        assert_eq!(h("https://user:pw@docs.rs/").as_deref(), Some("docs.rs"));
        // The real host is after the last `@` of the authority...
        assert_eq!(h("https://docs.rs@evil.com/").as_deref(), Some("evil.com"));
        // ... and a backslash ends the authority, as in WHATWG parsers.
        assert_eq!(
            h("https://evil.com\\@docs.rs/").as_deref(),
            Some("evil.com")
        );
        assert_eq!(h("https://evil.com#@docs.rs").as_deref(), Some("evil.com"));
        assert_eq!(h("http://[::1]:8080/").as_deref(), Some("[::1]"));
        assert_eq!(h("ftp://docs.rs/"), None);
        assert_eq!(h("docs.rs/serde"), None);
        assert_eq!(h("https://docs.rs:x/"), None);
        assert_eq!(h("https://docs%2ers/"), None);
        assert_eq!(h("https:///path"), None);
        assert_eq!(h("https://docs.rs /x"), None);
    }
}
