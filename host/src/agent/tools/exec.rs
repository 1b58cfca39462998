//! The `exec` tool: a command line run as `sh -c` in the OS sandbox of
//! started programs.

use super::{ToolEnv, EXEC_MAX_OUTPUT};
use crate::agent::record::truncate;
use crate::step::bindings::process::ProcessError;
use crate::step::bindings::tools::ToolError;

pub(super) async fn exec(
    env: &ToolEnv,
    command: &str,
    stop: crate::step::stop::StopSignal,
) -> Result<String, ToolError> {
    let Some(shell) = env.shell() else {
        return Err(ToolError::Denied(
            "exec denied: this step may not start `sh` (add grants: { exec: [sh] })".into(),
        ));
    };
    // Agent steps are never `for_each` items: their position is 0.
    let idempotency_key =
        crate::step::executor::idempotency_key(&env.run_id, &env.step_id, 0, env.attempt);
    let vars = crate::runtime::process::program_env(
        &env.grants,
        &crate::runtime::process::StepIds {
            run_id: &env.run_id,
            step_id: &env.step_id,
            attempt: env.attempt,
            idempotency_key: &idempotency_key,
        },
    );
    let spec = crate::runtime::process::ProgramSpec {
        program: shell,
        name: "sh".to_string(),
        args: vec!["-c".to_string(), command.to_string()],
        cwd: None,
        workdir: env.workdir.clone(),
        env: vars,
        extra_env: Vec::new(),
        stdin: None,
        timeout: env.exec_timeout,
        grants: &env.grants,
        scratch_dir: env.scratch_dir.clone(),
        capture_output_file: false,
        stop,
        lease: Default::default(),
        live_output: None,
    };
    let warnings = std::sync::Mutex::new(Vec::<String>::new());
    let log = |message: &str| {
        if let Ok(mut list) = warnings.lock() {
            list.push(message.to_string());
        }
    };
    let output = crate::runtime::process::run_sandboxed(&spec, &log)
        .await
        .map_err(|error| match error {
            ProcessError::Denied(denial) => ToolError::Denied(format!(
                "exec denied: {} (add {})",
                denial.what, denial.missing_grant
            )),
            ProcessError::Failed(message) => ToolError::Failed(format!("exec: {message}")),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut text = match (output.exit_code, output.signal) {
        (Some(code), _) => format!("exit code: {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_string(),
    };
    if output.timed_out {
        text.push_str(&format!(
            " (timed out after {} and was stopped)",
            crate::step::units::humanize(env.exec_timeout)
        ));
    }
    for warning in warnings.into_inner().unwrap_or_default() {
        text.push_str(&format!("\n[sandbox: {warning}]"));
    }
    if !stdout.is_empty() {
        text.push_str("\n--- stdout ---\n");
        text.push_str(&truncate(&stdout, EXEC_MAX_OUTPUT));
    }
    if !stderr.is_empty() {
        text.push_str("\n--- stderr ---\n");
        text.push_str(&truncate(&stderr, EXEC_MAX_OUTPUT));
    }
    if output.exit_code == Some(0) && !output.timed_out {
        Ok(text)
    } else {
        Err(ToolError::Failed(text))
    }
}
