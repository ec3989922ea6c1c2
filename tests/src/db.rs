//! Test databases: a SQLite file in a temporary directory, and a fresh schema in the machine's
//! PostgreSQL (`DATABASE_URL`, which `scripts/test` sets). Shared by `tests/` and `gateway/tests/`.

use sqlx::Connection as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// One database for one test; the PostgreSQL schema is dropped when this is dropped.
pub struct TestDb {
    /// Backend name, for messages.
    pub backend: &'static str,
    /// URL to hand to mcpgw.
    pub url: String,
    /// The SQLite file (SQLite only).
    pub sqlite_path: Option<std::path::PathBuf>,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

impl TestDb {
    /// A SQLite database in a new temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mcpgw.db");
        TestDb {
            backend: "sqlite",
            url: format!("sqlite://{}", path.display()),
            sqlite_path: Some(path),
            _dir: Some(dir),
            schema: None,
        }
    }

    /// A new schema in PostgreSQL, or `None` (said loudly) when `DATABASE_URL` is not set. Under
    /// CI the variable is required: a missing database fails instead of skipping.
    pub async fn postgres() -> Option<TestDb> {
        let Ok(base) = std::env::var("DATABASE_URL") else {
            assert!(
                std::env::var("CI").is_err(),
                "CI must run the PostgreSQL tests: set DATABASE_URL"
            );
            eprintln!(
                "\n*** DATABASE_URL is not set: SKIPPING the PostgreSQL half of this test ***\n"
            );
            return None;
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let schema = format!(
            "mcpgw_test_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000
        );
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .expect("connect to DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .expect("create test schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(TestDb {
            backend: "postgres",
            url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
            sqlite_path: None,
            _dir: None,
            schema: Some((base, schema)),
        })
    }

    /// The PostgreSQL schema of this database (PostgreSQL only).
    pub fn pg_schema(&self) -> Option<&str> {
        self.schema.as_ref().map(|(_, s)| s.as_str())
    }

    /// SQLite, and PostgreSQL when available.
    pub async fn all() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite()];
        dbs.extend(TestDb::postgres().await);
        dbs
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, schema)) = self.schema.take() else {
            return;
        };
        // Drop may run inside a runtime: clean up on a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&base).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// Runs one statement with one integer parameter (`$1`) on either backend: for tests that
/// tamper with the store behind the gateway's back.
pub async fn execute(url: &str, sql: &'static str, param: i64) {
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query(sql)
            .bind(param)
            .execute(&mut conn)
            .await
            .expect(sql);
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect");
        sqlx::query(sql)
            .bind(param)
            .execute(&mut conn)
            .await
            .expect(sql);
    }
}
