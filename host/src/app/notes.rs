//! Artifacts, comments and the checkpoints people make, for every front end.

use sha2::{Digest, Sha256};

use crate::app::Invalid;
use crate::store::{ArtifactRecord, CommentRecord, EngineStore, StepRecord, StepStatus};

/// The longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 10_000;

/// Add a comment to a run (or one of its steps) after checking it: a known
/// step, 1 to 10,000 characters of text, an author of 1 to 100 characters.
pub fn add_comment(
    store: &dyn EngineStore,
    run_id: &str,
    step: Option<&str>,
    author: &str,
    text: &str,
) -> anyhow::Result<CommentRecord> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_COMMENT_CHARS {
        return Err(Invalid(format!("a comment has 1 to {MAX_COMMENT_CHARS} characters")).into());
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Invalid("a comment may not hold control characters".into()).into());
    }
    let author = author.trim();
    if author.is_empty() || author.chars().count() > 100 || author.chars().any(char::is_control) {
        return Err(Invalid(
            "the author has 1 to 100 characters, without control characters".into(),
        )
        .into());
    }
    if let Some(step) = step {
        if !store.steps(run_id)?.iter().any(|s| s.id == step) {
            return Err(Invalid(format!(
                "run {run_id} has no step '{}'",
                step.chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect::<String>()
            ))
            .into());
        }
    }
    Ok(store.add_comment(run_id, step, author, text)?)
}

/// The longest checkpoint label, in characters.
pub const MAX_LABEL_CHARS: usize = 200;

/// A checkpoint a person made.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Its id (the sequence number of its event): `wfhost restore ID`.
    pub seq: i64,
    /// Its label, trimmed.
    pub label: String,
    /// Bytes of step outputs a restore to it keeps.
    pub size_bytes: u64,
}

/// A checkpoint label, trimmed, or why it is refused: 1 to
/// [`MAX_LABEL_CHARS`] characters without control characters.
pub fn checkpoint_label(label: &str) -> Result<&str, String> {
    let label = label.trim();
    if label.is_empty()
        || label.chars().count() > MAX_LABEL_CHARS
        || label.chars().any(char::is_control)
    {
        return Err(format!(
            "give 1 to {MAX_LABEL_CHARS} characters without control characters"
        ));
    }
    Ok(label)
}

/// Record a checkpoint of a run under `label` (checked as
/// [`checkpoint_label`] says; a bad one is [`Invalid`]).
pub fn add_checkpoint(
    store: &dyn EngineStore,
    run_id: &str,
    label: &str,
) -> anyhow::Result<Checkpoint> {
    let label = checkpoint_label(label).map_err(Invalid)?;
    let size_bytes = state_bytes(&store.steps(run_id)?, None);
    let data =
        serde_json::json!({ "label": label, "created_by": "user", "size_bytes": size_bytes });
    store.append_event(run_id, None, "checkpoint", &data)?;
    let seq = store
        .checkpoints(run_id)?
        .iter()
        .rev()
        .find(|c| {
            c.kind == "checkpoint" && c.data.get("label").and_then(|l| l.as_str()) == Some(label)
        })
        .map(|c| c.seq)
        .unwrap_or_default();
    Ok(Checkpoint {
        seq,
        label: label.to_string(),
        size_bytes,
    })
}

/// Bytes of the step outputs a restore to a checkpoint keeps: those of
/// the steps in `completed` (every completed step when `None`).
pub fn state_bytes(steps: &[StepRecord], completed: Option<&[String]>) -> u64 {
    steps
        .iter()
        .filter(|s| match completed {
            Some(ids) => ids.contains(&s.id),
            None => s.status == StepStatus::Completed,
        })
        .filter_map(|s| s.output.as_ref())
        .map(|o| o.to_string().len() as u64)
        .sum()
}

/// The content of an artifact, checked against its recorded SHA-256 (a
/// file changed in the run folder is refused).
pub fn artifact_bytes(
    store: &dyn EngineStore,
    run_id: &str,
    artifact: &ArtifactRecord,
) -> anyhow::Result<Vec<u8>> {
    if artifact.sha256.len() != 64 || !artifact.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        anyhow::bail!("artifact {} has a malformed hash", artifact.id);
    }
    let path = store
        .run_files(run_id)
        .dir()
        .join("artifacts")
        .join(&artifact.sha256);
    // Kept in the store when it is shared by several machines; else (or
    // not found there) in this machine's run folder.
    let bytes = match store.artifact_content(run_id, &artifact.sha256)? {
        Some(bytes) => bytes,
        None => std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("artifact {} ({}): {e}", artifact.id, path.display()))?,
    };
    if hex::encode(Sha256::digest(&bytes)) != artifact.sha256 {
        anyhow::bail!(
            "artifact {}: {} no longer holds what was kept (its SHA-256 differs)",
            artifact.id,
            path.display()
        );
    }
    Ok(bytes)
}
