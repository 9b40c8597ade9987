//! Real databases for tests: a fresh SQLite file, or a fresh database on the PostgreSQL server
//! named by `SLUICE_TEST_POSTGRES_URL` (default: the local server's `test` database). An
//! unreachable PostgreSQL fails the test: it is never skipped.

#![allow(dead_code)]

pub mod server;

use sluice_control_plane::store::Store;
use sqlx::Connection;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn postgres_admin_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A database that exists for one test.
pub enum TestDb {
    Sqlite { dir: tempfile::TempDir },
    Postgres { url: String, name: String },
}

impl TestDb {
    pub async fn sqlite() -> Self {
        TestDb::Sqlite {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub async fn postgres() -> Self {
        let admin = postgres_admin_url();
        let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for these tests: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        conn.close().await.ok();
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        TestDb::Postgres {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// The URL to give the control plane.
    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite { dir } => {
                format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display())
            }
            TestDb::Postgres { url, .. } => url.clone(),
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url()).await.expect("connect store")
    }

    /// Drops a PostgreSQL database (SQLite files go with the temporary directory).
    pub async fn cleanup(self) {
        if let TestDb::Postgres { name, .. } = &self {
            let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
                .await
                .expect("connect");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .ok();
            conn.close().await.ok();
        }
    }
}

/// Runs each named async test function (taking `&TestDb`) against SQLite and PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::support::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::support::TestDb::postgres().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}
