//! Artifacts, comments and API tokens.

use super::{text, PgStore};
use crate::store::{now, ArtifactRecord, CommentRecord, NoteStore, Result, TokenStore};

impl NoteStore for PgStore {
    fn add_artifact(
        &self,
        run_id: &str,
        step: &str,
        name: &str,
        size: u64,
        sha256: &str,
        media_type: &str,
    ) -> Result<i64> {
        let size = size.min(i64::MAX as u64) as i64;
        let name = text(name);
        self.write(run_id, false, |tx| {
            Ok(tx
                .query_one(
                    "INSERT INTO artifacts (run_id, step_id, name, size, sha256, media_type, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[&run_id, &step, &name, &size, &sha256, &media_type, &now()],
                )?
                .get(0))
        })
    }

    fn keeps_artifact_content(&self) -> bool {
        true
    }

    fn put_artifact_content(&self, run_id: &str, sha256: &str, bytes: &[u8]) -> Result<()> {
        self.write(run_id, false, |tx| {
            tx.execute(
                "INSERT INTO artifact_contents (run_id, sha256, content) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&run_id, &sha256, &bytes],
            )?;
            Ok(())
        })
    }

    fn artifact_content(&self, run_id: &str, sha256: &str) -> Result<Option<Vec<u8>>> {
        self.with(|client| {
            Ok(client
                .query_opt(
                    "SELECT content FROM artifact_contents WHERE run_id = $1 AND sha256 = $2",
                    &[&run_id, &sha256],
                )?
                .map(|row| row.get(0)))
        })
    }

    fn artifacts(&self, run_id: &str, step: Option<&str>) -> Result<Vec<ArtifactRecord>> {
        self.with(|client| {
            Ok(client
                .query(
                    "SELECT id, step_id, name, size, sha256, media_type, created_at FROM artifacts
                     WHERE run_id = $1 AND ($2::TEXT IS NULL OR step_id = $2) ORDER BY id",
                    &[&run_id, &step],
                )?
                .iter()
                .map(|row| ArtifactRecord {
                    id: row.get(0),
                    step: row.get(1),
                    name: row.get(2),
                    size: row.get::<_, i64>(3).max(0) as u64,
                    sha256: row.get(4),
                    media_type: row.get(5),
                    created_at: row.get(6),
                })
                .collect())
        })
    }

    fn add_comment(
        &self,
        run_id: &str,
        step: Option<&str>,
        author: &str,
        body: &str,
    ) -> Result<CommentRecord> {
        let created_at = now();
        let (author, body) = (text(author), text(body));
        let id: i64 = self.with(|client| {
            Ok(client
                .query_one(
                    "INSERT INTO comments (run_id, step_id, author, text, created_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[&run_id, &step, &author, &body, &created_at],
                )?
                .get(0))
        })?;
        Ok(CommentRecord {
            id,
            step: step.map(str::to_string),
            author: author.into_owned(),
            text: body.into_owned(),
            created_at,
        })
    }

    fn comments(&self, run_id: &str) -> Result<Vec<CommentRecord>> {
        self.with(|client| {
            Ok(client
                .query(
                    "SELECT id, step_id, author, text, created_at FROM comments
                     WHERE run_id = $1 ORDER BY id",
                    &[&run_id],
                )?
                .iter()
                .map(|row| CommentRecord {
                    id: row.get(0),
                    step: row.get(1),
                    author: row.get(2),
                    text: row.get(3),
                    created_at: row.get(4),
                })
                .collect())
        })
    }
}

impl TokenStore for PgStore {
    fn add_token(&self, name: &str, sha256: &str) -> Result<()> {
        let name = text(name);
        self.with(|client| {
            client.execute(
                "INSERT INTO api_tokens (sha256, name, created_at) VALUES ($1, $2, $3)",
                &[&sha256, &name, &now()],
            )?;
            Ok(())
        })
    }

    fn token_count(&self) -> Result<u64> {
        self.with(|client| {
            let count: i64 = client
                .query_one("SELECT COUNT(*) FROM api_tokens", &[])?
                .get(0);
            Ok(count.max(0) as u64)
        })
    }

    fn token_known(&self, sha256: &str) -> Result<bool> {
        self.with(|client| {
            Ok(client
                .query_opt("SELECT 1 FROM api_tokens WHERE sha256 = $1", &[&sha256])?
                .is_some())
        })
    }
}
