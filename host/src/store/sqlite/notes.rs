//! Artifacts and comments.

use rusqlite::params;

use super::{offload, SqliteStore};
use crate::store::{now, ArtifactRecord, CommentRecord, NoteStore, Result};

impl NoteStore for SqliteStore {
    fn add_artifact(
        &self,
        run_id: &str,
        step: &str,
        name: &str,
        size: u64,
        sha256: &str,
        media_type: &str,
    ) -> Result<i64> {
        offload(|| {
            let conn = self.conn();
            conn.execute(
                "INSERT INTO artifacts (run_id, step_id, name, size, sha256, media_type, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![run_id, step, name, size.min(i64::MAX as u64) as i64, sha256, media_type, now()],
            )?;
            Ok(conn.last_insert_rowid())
        })
    }

    fn artifacts(&self, run_id: &str, step: Option<&str>) -> Result<Vec<ArtifactRecord>> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT id, step_id, name, size, sha256, media_type, created_at FROM artifacts
                 WHERE run_id = ?1 AND (?2 IS NULL OR step_id = ?2) ORDER BY id",
            )?;
            let rows = stmt
                .query_map(params![run_id, step], |row| {
                    Ok(ArtifactRecord {
                        id: row.get(0)?,
                        step: row.get(1)?,
                        name: row.get(2)?,
                        size: row.get::<_, i64>(3)?.max(0) as u64,
                        sha256: row.get(4)?,
                        media_type: row.get(5)?,
                        created_at: row.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    fn add_comment(
        &self,
        run_id: &str,
        step: Option<&str>,
        author: &str,
        text: &str,
    ) -> Result<CommentRecord> {
        offload(|| {
            let conn = self.conn();
            let created_at = now();
            conn.execute(
                "INSERT INTO comments (run_id, step_id, author, text, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, step, author, text, created_at],
            )?;
            Ok(CommentRecord {
                id: conn.last_insert_rowid(),
                step: step.map(str::to_string),
                author: author.to_string(),
                text: text.to_string(),
                created_at,
            })
        })
    }

    fn comments(&self, run_id: &str) -> Result<Vec<CommentRecord>> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT id, step_id, author, text, created_at FROM comments WHERE run_id = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([run_id], |row| {
                    Ok(CommentRecord {
                        id: row.get(0)?,
                        step: row.get(1)?,
                        author: row.get(2)?,
                        text: row.get(3)?,
                        created_at: row.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }
}
