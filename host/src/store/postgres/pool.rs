//! Connections to PostgreSQL, pooled, and used off the async runtime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement, Transaction};

use crate::store::{Durability, Result, StoreError};

/// How many idle connections a handle keeps.
const IDLE_KEPT: usize = 8;

/// A small pool of connections to one database. A connection that broke
/// (the server restarted, the network went away) is dropped, and the next
/// call opens a new one.
pub(super) struct Pool {
    config: Config,
    /// Where the database is, without credentials, for messages.
    place: String,
    idle: Mutex<Vec<Db>>,
}

/// A connection and the statements prepared on it: each SQL text is
/// prepared once per connection (a plain query would be parsed and planned
/// again each time, one more round trip per statement).
pub(super) struct Db {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// A statement of `sql`, prepared on first use.
fn prepared<'s>(
    statements: &'s mut HashMap<String, Statement>,
    prepare: impl FnOnce(&str) -> PgResult<Statement>,
    sql: &str,
) -> PgResult<&'s Statement> {
    if !statements.contains_key(sql) {
        let statement = prepare(sql)?;
        statements.insert(sql.to_string(), statement);
    }
    Ok(&statements[sql])
}

/// What the client's calls return.
type PgResult<T> = std::result::Result<T, postgres::Error>;

/// Parameters of a statement.
type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl Db {
    /// Start a transaction.
    pub(super) fn transaction(&mut self) -> PgResult<Tx<'_>> {
        Ok(Tx {
            tx: self.client.transaction()?,
            statements: &mut self.statements,
        })
    }

    /// Rows of `sql`.
    pub(super) fn query(&mut self, sql: &str, params: Params<'_>) -> PgResult<Vec<Row>> {
        let client = &mut self.client;
        let statement = prepared(&mut self.statements, |sql| client.prepare(sql), sql)?;
        client.query(statement, params)
    }

    /// The one row of `sql`.
    pub(super) fn query_one(&mut self, sql: &str, params: Params<'_>) -> PgResult<Row> {
        let client = &mut self.client;
        let statement = prepared(&mut self.statements, |sql| client.prepare(sql), sql)?;
        client.query_one(statement, params)
    }

    /// The row of `sql`, if any.
    pub(super) fn query_opt(&mut self, sql: &str, params: Params<'_>) -> PgResult<Option<Row>> {
        let client = &mut self.client;
        let statement = prepared(&mut self.statements, |sql| client.prepare(sql), sql)?;
        client.query_opt(statement, params)
    }

    /// Run `sql`; how many rows it changed.
    pub(super) fn execute(&mut self, sql: &str, params: Params<'_>) -> PgResult<u64> {
        let client = &mut self.client;
        let statement = prepared(&mut self.statements, |sql| client.prepare(sql), sql)?;
        client.execute(statement, params)
    }
}

/// A transaction on a [`Db`], using its prepared statements.
pub(super) struct Tx<'a> {
    tx: Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
}

impl Tx<'_> {
    /// Rows of `sql`.
    pub(super) fn query(&mut self, sql: &str, params: Params<'_>) -> PgResult<Vec<Row>> {
        let tx = &mut self.tx;
        let statement = prepared(self.statements, |sql| tx.prepare(sql), sql)?;
        tx.query(statement, params)
    }

    /// The one row of `sql`.
    pub(super) fn query_one(&mut self, sql: &str, params: Params<'_>) -> PgResult<Row> {
        let tx = &mut self.tx;
        let statement = prepared(self.statements, |sql| tx.prepare(sql), sql)?;
        tx.query_one(statement, params)
    }

    /// The row of `sql`, if any.
    pub(super) fn query_opt(&mut self, sql: &str, params: Params<'_>) -> PgResult<Option<Row>> {
        let tx = &mut self.tx;
        let statement = prepared(self.statements, |sql| tx.prepare(sql), sql)?;
        tx.query_opt(statement, params)
    }

    /// Run `sql`; how many rows it changed.
    pub(super) fn execute(&mut self, sql: &str, params: Params<'_>) -> PgResult<u64> {
        let tx = &mut self.tx;
        let statement = prepared(self.statements, |sql| tx.prepare(sql), sql)?;
        tx.execute(statement, params)
    }

    /// Run several statements (no parameters), unprepared.
    pub(super) fn batch_execute(&mut self, sql: &str) -> PgResult<()> {
        self.tx.batch_execute(sql)
    }

    /// Commit.
    pub(super) fn commit(self) -> PgResult<()> {
        self.tx.commit()
    }
}

impl Pool {
    /// A pool for `url`; checks that the database answers.
    pub(super) fn new(url: &str, durability: Durability) -> Result<Pool> {
        let mut config: Config = url.parse().map_err(|error| {
            StoreError::Database(
                format!("'{}' is not a PostgreSQL URL: {error}", redact(url)).into(),
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("wfhost");
        // What `[store] durability` promises (see [`Durability`]): with
        // `normal`, a commit survives any crash of wfhost at once, and a
        // crash of the database server may lose the last moment of commits
        // (the database stays consistent), as SQLite's NORMAL does after a
        // power loss; `full` waits for each commit's WAL flush.
        let synchronous = match durability {
            Durability::Normal => "off",
            Durability::Full => "on",
        };
        config.options(&format!("-c synchronous_commit={synchronous}"));
        let pool = Pool {
            place: redact(url),
            config,
            idle: Mutex::new(Vec::new()),
        };
        let client = pool.connect()?;
        pool.give_back(Db {
            client,
            statements: HashMap::new(),
        });
        Ok(pool)
    }

    /// Run `work` with a connection, off the async runtime.
    pub(super) fn with<T: Send>(
        &self,
        work: impl FnOnce(&mut Db) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| {
            let mut client = self.take()?;
            let result = work(&mut client);
            self.give_back(client);
            result
        })
    }

    fn take(&self) -> Result<Db> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        match idle {
            Some(db) if !db.client.is_closed() => Ok(db),
            _ => Ok(Db {
                client: self.connect()?,
                statements: HashMap::new(),
            }),
        }
    }

    fn give_back(&self, db: Db) {
        if db.client.is_closed() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < IDLE_KEPT {
            idle.push(db);
        }
    }

    pub(super) fn connect(&self) -> Result<Client> {
        self.config.connect(NoTls).map_err(|error| {
            StoreError::Database(
                format!(
                    "cannot reach PostgreSQL at {}: {}",
                    self.place,
                    with_causes(&error)
                )
                .into(),
            )
        })
    }
}

/// An error with what caused it ("error connecting to server: Connection
/// refused").
pub(super) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// `url` without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Run `blocking` where the synchronous PostgreSQL client may block: it
/// drives its own small runtime, which tokio refuses to start on a thread
/// that is driving async tasks. On a worker of a multi-threaded runtime the
/// worker hands its tasks to another thread first
/// ([`tokio::task::block_in_place`]); on a current-thread runtime, which
/// has no other thread, the call runs on a short-lived thread of its own.
pub(super) fn off_runtime<T: Send>(blocking: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(blocking)
        }
        Ok(_) => std::thread::scope(|scope| {
            scope
                .spawn(blocking)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
        Err(_) => blocking(),
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, Pool};
    use crate::store::Durability;

    #[test]
    fn a_failed_statement_says_what_the_server_said() {
        let url = crate::store::conformance::scratch_postgres::fresh_database();
        let pool = Pool::new(&url, Durability::Normal).unwrap();
        let error = pool
            .with(|client| Ok(client.query("SELECT nope", &[])?.len()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("column \"nope\" does not exist"), "{error}");
    }

    #[test]
    fn durability_sets_the_sessions_synchronous_commit() {
        let url = crate::store::conformance::scratch_postgres::fresh_database();
        for (durability, expected) in [(Durability::Normal, "off"), (Durability::Full, "on")] {
            let pool = Pool::new(&url, durability).unwrap();
            let setting: String = pool
                .with(|client| Ok(client.query_one("SHOW synchronous_commit", &[])?.get(0)))
                .unwrap();
            assert_eq!(setting, expected, "{durability:?}");
        }
    }

    #[test]
    fn passwords_are_left_out_of_messages() {
        assert_eq!(
            redact("postgres://ann:secret@db:5432/wf"),
            "postgres://ann:***@db:5432/wf"
        );
        assert_eq!(redact("postgres://ann@db/wf"), "postgres://ann@db/wf");
        assert_eq!(redact("host=db user=ann"), "host=db user=ann");
    }
}
