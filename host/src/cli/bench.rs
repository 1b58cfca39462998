//! `wfhost bench`: synthetic workflows that measure what wfhost itself
//! costs per step (scheduling, wasm instantiation, SQLite, run folders),
//! with persistence on. Not a test: it prints numbers.
//!
//! - W1: 1 root → N parallel no-op function steps → 1 sink (N = 1000)
//! - W2: a chain of N steps, each passing its output on (N = 200)
//! - W3: 1 → 8 steps sleeping 200 ms, parallelism 4 → 1 (ideal 400 ms)

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::engine::Silent;
use crate::store::RunStatus;

/// Arguments of `wfhost bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which workloads to run.
    #[arg(long, value_delimiter = ',', default_values = ["w1", "w2", "w3"])]
    workload: Vec<Workload>,
    /// Steps running at once in W1 and W2.
    #[arg(long, default_value_t = 16)]
    parallelism: usize,
    /// Width of W1's fan-out.
    #[arg(long, default_value_t = 1000)]
    fan_out: usize,
    /// Length of W2's chain.
    #[arg(long, default_value_t = 200)]
    chain: usize,
    /// Directory for the benchmark's store (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long)]
    json: bool,
}

/// A synthetic workload.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Workload {
    /// Fan-out / fan-in of no-op function steps.
    W1,
    /// A chain of steps passing output on.
    W2,
    /// Sleeping script steps under a parallelism limit.
    W3,
}

struct Measured {
    name: &'static str,
    steps: usize,
    wall: Duration,
    ideal: Duration,
}

/// `wfhost bench`.
pub fn bench(args: BenchArgs) -> Result<ExitCode> {
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("wfhost-bench-{}", uuid::Uuid::new_v4().simple())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_all(&args, &dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let results = result?;
    if args.json {
        let doc: Vec<Value> = results
            .iter()
            .map(|m| {
                json!({
                    "workload": m.name, "steps": m.steps,
                    "wall_ms": m.wall.as_secs_f64() * 1e3,
                    "ideal_ms": m.ideal.as_secs_f64() * 1e3,
                    "overhead_per_step_ms": overhead_per_step(m).as_secs_f64() * 1e3,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{:<4} {:>6} {:>12} {:>12} {:>20}",
            "", "steps", "wall", "ideal", "overhead/step"
        );
        for m in &results {
            println!(
                "{:<4} {:>6} {:>10.1}ms {:>10.1}ms {:>18.3}ms",
                m.name,
                m.steps,
                m.wall.as_secs_f64() * 1e3,
                m.ideal.as_secs_f64() * 1e3,
                overhead_per_step(m).as_secs_f64() * 1e3
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn overhead_per_step(m: &Measured) -> Duration {
    m.wall.saturating_sub(m.ideal) / m.steps.max(1) as u32
}

fn run_all(args: &BenchArgs, dir: &Path) -> Result<Vec<Measured>> {
    let store = crate::store::open(&dir.join("home"), Default::default())?;
    let runtime = crate::app::runtime(dir)?;
    // Compile up front: the benchmark measures per-step cost, not compilation.
    runtime.load("echo")?;
    runtime.load("script")?;
    let driver = crate::app::driver(&store, runtime, None, Arc::new(Silent));
    let tokio = super::tokio_runtime()?;
    let mut results = Vec::new();
    for workload in &args.workload {
        let (name, text, steps, ideal) = match workload {
            Workload::W1 => (
                "W1",
                fan_out(args.fan_out, args.parallelism),
                args.fan_out + 2,
                Duration::ZERO,
            ),
            Workload::W2 => (
                "W2",
                chain(args.chain, args.parallelism),
                args.chain,
                Duration::ZERO,
            ),
            Workload::W3 => ("W3", sleepers(), 10, Duration::from_millis(400)),
        };
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text)?;
        let workflow = super::run::load_workflow(None, &path)?;
        let args_value =
            crate::workflow::resolve_args(workflow.def.args.as_ref(), Default::default())
                .map_err(|d| anyhow::anyhow!("{d}"))?;
        let started = Instant::now();
        let run_id = driver.create_run(&workflow, &args_value)?;
        let outcome = tokio.block_on(driver.drive(&run_id, &workflow, &args_value))?;
        let wall = started.elapsed();
        if outcome.status != RunStatus::Completed {
            anyhow::bail!(
                "{name} did not complete (run {run_id}): see its logs in {}",
                dir.display()
            );
        }
        results.push(Measured {
            name,
            steps,
            wall,
            ideal,
        });
    }
    Ok(results)
}

fn fan_out(width: usize, parallelism: usize) -> String {
    let mut text = format!(
        "name: bench-w1\nconfig: {{ parallelism: {parallelism} }}\nsteps:\n  - id: root\n    type: function\n    component: echo\n    with: {{ n: 0 }}\n"
    );
    for i in 0..width {
        let _ = write!(text, "  - id: s{i}\n    type: function\n    component: echo\n    needs: [root]\n    with: {{ n: {i} }}\n");
    }
    text.push_str("  - id: sink\n    type: function\n    component: echo\n    needs: [");
    text.push_str(
        &(0..width)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    text.push_str("]\n");
    text
}

fn chain(length: usize, parallelism: usize) -> String {
    let mut text = format!(
        "name: bench-w2\nconfig: {{ parallelism: {parallelism} }}\nsteps:\n  - id: s0\n    type: function\n    component: echo\n    with: {{ value: 0 }}\n"
    );
    for i in 1..length {
        let _ = write!(
            text,
            "  - id: s{i}\n    type: function\n    component: echo\n    needs: [s{}]\n    with: {{ value: \"{{{{ steps.s{}.output.value + 1 }}}}\" }}\n",
            i - 1,
            i - 1
        );
    }
    text
}

fn sleepers() -> String {
    let mut text = String::from(
        "name: bench-w3\nconfig: { parallelism: 4 }\nsteps:\n  - id: root\n    type: function\n    component: echo\n",
    );
    for i in 0..8 {
        let _ = write!(
            text,
            "  - id: sleep{i}\n    needs: [root]\n    grants: {{ exec: [sleep] }}\n    run: sleep 0.2\n"
        );
    }
    text.push_str("  - id: sink\n    type: function\n    component: echo\n    needs: [");
    text.push_str(
        &(0..8)
            .map(|i| format!("sleep{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    text.push_str("]\n");
    text
}
