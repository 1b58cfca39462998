//! API tokens: only their SHA-256 is stored.

use rusqlite::{params, OptionalExtension};

use super::{offload, SqliteStore};
use crate::store::{now, Result, TokenStore};

impl TokenStore for SqliteStore {
    fn add_token(&self, name: &str, sha256: &str) -> Result<()> {
        offload(|| {
            let conn = self.conn();
            conn.execute(
                "INSERT INTO api_tokens (sha256, name, created_at) VALUES (?1, ?2, ?3)",
                params![sha256, name, now()],
            )?;
            Ok(())
        })
    }

    fn token_count(&self) -> Result<u64> {
        offload(|| {
            let conn = self.conn();
            let count: i64 =
                conn.query_row("SELECT COUNT(*) FROM api_tokens", [], |row| row.get(0))?;
            Ok(count.max(0) as u64)
        })
    }

    fn token_known(&self, sha256: &str) -> Result<bool> {
        offload(|| {
            let conn = self.conn();
            let found: Option<i64> = conn
                .query_row(
                    "SELECT 1 FROM api_tokens WHERE sha256 = ?1",
                    [sha256],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(found.is_some())
        })
    }
}
