//! The board of `wfhost serve`, in a real browser: headless Chromium
//! (Debian's `chromium`) driven by Playwright (`tests/board/e2e.mjs`,
//! playwright-core from `tests/board/package.json`). Screenshots go to
//! `target/board-screenshots/`.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

#[test]
fn the_board_starts_a_run_shows_its_cards_and_logs_and_approves_an_agent_call() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let playwright = repo().join("tests/board/node_modules/playwright-core");
    if !std::path::Path::new(&chromium).exists() || !playwright.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the board test needs {chromium} and {} (`.ci/run` installs both)",
            playwright.display()
        );
        eprintln!(
            "skipped: no {chromium} or playwright-core (run `npm install --prefix tests/board`)"
        );
        return;
    }
    let sandbox = Sandbox::new();
    for name in [
        "hello.yaml",
        "agent-review.yaml",
        "agent-review.replies.yaml",
        "code-review.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join("workflows").join(name)).unwrap();
        sandbox.write(name, &text);
    }
    std::fs::create_dir_all(sandbox.path().join("reports")).unwrap();
    let mut server = sandbox
        .command(&["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let shots = repo().join("target/board-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = std::process::Command::new("node")
        .arg(repo().join("tests/board/e2e.mjs"))
        .arg(format!("http://{address}"))
        .arg(sandbox.path())
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        output.status.success(),
        "{}\n{}\n(screenshots in {})",
        text(&output.stdout),
        text(&output.stderr),
        shots.display()
    );
    assert!(shots.join("5-agent-review-completed.png").is_file());
}
