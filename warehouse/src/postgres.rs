//! PostgreSQL: one table per dataset, created on first write and migrated as new properties
//! appear (`ALTER TABLE … ADD COLUMN IF NOT EXISTS`), each batch loaded with `COPY` into a
//! temporary table and moved with `INSERT … ON CONFLICT (id) DO NOTHING` in one
//! transaction: a batch redelivered after a crash writes no row twice.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Row as _};

use crate::columns::{ColumnType, FIXED, scalar_columns, split_properties};
use crate::{Row, Warehouse, WriteError};

pub struct Postgres {
    pool: PgPool,
    schema: String,
    table: String,
    /// Property columns as the table has them, read on first write and after a migration.
    columns: tokio::sync::Mutex<Option<HashMap<String, ColumnType>>>,
}

impl Postgres {
    /// Connects lazily: a database that is down delays the first write, not the start.
    /// `schema` and `table` are plain names (the definition's settings allow only those).
    pub fn new(url: &str, schema: &str, table: &str) -> Result<Self, WriteError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| WriteError::Refused(format!("the connection URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            schema: schema.to_owned(),
            table: table.to_owned(),
            columns: tokio::sync::Mutex::new(None),
        })
    }

    fn qualified(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.table))
    }

    /// Creates the schema and table when missing, and reads the property columns.
    async fn load_columns(&self) -> Result<HashMap<String, ColumnType>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let fixed: Vec<String> = FIXED
            .iter()
            .map(|(name, _, kind)| format!("{} {kind}", ident(name)))
            .collect();
        sqlx::query(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            ident(&self.schema)
        ))
        .execute(&mut *conn)
        .await
        .or_else(ignore_race)?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.qualified(),
            fixed.join(", ")
        ))
        .execute(&mut *conn)
        .await
        .or_else(ignore_race)?;
        let rows = sqlx::query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2",
        )
        .bind(&self.schema)
        .bind(&self.table)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let name: String = row.try_get(0).ok()?;
                let kind: String = row.try_get(1).ok()?;
                if FIXED.iter().any(|(n, _, _)| *n == name) {
                    return None;
                }
                Some((name, ColumnType::from_sql(&kind)?))
            })
            .collect())
    }

    /// The property columns after adding what these rows need.
    async fn migrate(&self, rows: &[Row<'_>]) -> Result<HashMap<String, ColumnType>, sqlx::Error> {
        let mut known = self.columns.lock().await;
        if known.is_none() {
            *known = Some(self.load_columns().await?);
        }
        let columns = known.get_or_insert_with(HashMap::new);
        let mut wanted: Vec<(String, ColumnType)> = Vec::new();
        for row in rows {
            for (column, value) in scalar_columns(row.event) {
                if !columns.contains_key(&column)
                    && !wanted.iter().any(|(c, _)| *c == column)
                    && let Some(kind) = ColumnType::of(value)
                {
                    wanted.push((column, kind));
                }
            }
        }
        if !wanted.is_empty() {
            let mut conn = self.pool.acquire().await?;
            for (column, kind) in &wanted {
                sqlx::query(&format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                    self.qualified(),
                    ident(column),
                    kind.sql()
                ))
                .execute(&mut *conn)
                .await
                .or_else(ignore_race)?;
                tracing::info!(table = %self.table, column = %column, kind = kind.sql(), "warehouse column added");
            }
            drop(conn);
            // Another writer may have added the same column with another type first.
            *columns = self.load_columns().await?;
        }
        Ok(columns.clone())
    }

    async fn write_rows(&self, rows: &[Row<'_>]) -> Result<u64, sqlx::Error> {
        let columns = self.migrate(rows).await?;
        let mut used: Vec<&str> = Vec::new();
        for row in rows {
            for (column, _) in scalar_columns(row.event) {
                if let Some(name) = columns.get_key_value(&column).map(|(k, _)| k.as_str())
                    && !used.contains(&name)
                {
                    used.push(name);
                }
            }
        }
        used.sort_unstable();
        let names: Vec<String> = FIXED
            .iter()
            .map(|(name, _, _)| ident(name))
            .chain(used.iter().map(|c| ident(c)))
            .collect();
        let list = names.join(", ");
        let mut csv = String::with_capacity(rows.len() * 512);
        for row in rows {
            encode_row(&mut csv, row, &used, &columns);
        }
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(&format!(
            "CREATE TEMP TABLE sluice_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
            self.qualified()
        ))
        .execute(&mut *tx)
        .await?;
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY sluice_stage ({list}) FROM STDIN WITH (FORMAT csv)"
            ))
            .await?;
        copy.send(csv.into_bytes()).await?;
        copy.finish().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO {} ({list}) SELECT {list} FROM sluice_stage ON CONFLICT (id) DO NOTHING",
            self.qualified()
        ))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted)
    }
}

impl Warehouse for Postgres {
    async fn write(&self, rows: &[Row<'_>]) -> Result<u64, WriteError> {
        match self.write_rows(rows).await {
            Ok(n) => Ok(n),
            Err(e) => {
                let error = classify(&e);
                if let WriteError::Unavailable(_) = &error {
                    // The table may have changed beneath the cached columns.
                    *self.columns.lock().await = None;
                }
                Err(error)
            }
        }
    }
}

/// A concurrent `CREATE … IF NOT EXISTS` can still fail on the catalog's unique index; the
/// object exists then, which is what was wanted.
fn ignore_race(e: sqlx::Error) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    match &e {
        sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("23505" | "42P07" | "42701")) =>
        {
            Ok(Default::default())
        }
        _ => Err(e),
    }
}

/// Connection trouble, overload, shutdowns, conflicts and a table changed beneath us are
/// worth retrying; data PostgreSQL refuses (SQLSTATE classes 22, 23, …) is not.
fn classify(e: &sqlx::Error) -> WriteError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let transient = ["08", "40", "53", "55", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
                || matches!(code.as_str(), "42703" | "42P01" | "3F000");
            let message = format!("{} (SQLSTATE {code})", db.message());
            if transient {
                WriteError::Unavailable(message)
            } else {
                WriteError::Refused(message)
            }
        }
        other => WriteError::Unavailable(other.to_string()),
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One CSV line: the envelope's columns, then the typed property columns in `used`; a value
/// whose type is not its column's goes to the JSON column with the nested ones.
fn encode_row(
    out: &mut String,
    row: &Row<'_>,
    used: &[&str],
    columns: &HashMap<String, ColumnType>,
) {
    let (typed, mut rest) = split_properties(row.event);
    let mut by_column: HashMap<&str, &Value> = HashMap::new();
    for (key, column, value) in &typed {
        if columns.get(column.as_str()).copied() == ColumnType::of(value)
            && used.contains(&column.as_str())
        {
            by_column.insert(column.as_str(), *value);
        } else {
            rest.insert((*key).to_owned(), (*value).clone());
        }
    }
    let mut first = true;
    let mut field = |out: &mut String, value: Option<String>| {
        if !first {
            out.push(',');
        }
        first = false;
        if let Some(value) = value {
            out.push('"');
            // PostgreSQL text holds no NUL; JSON's escaped NUL is refused by jsonb too.
            out.push_str(
                &value
                    .replace('\0', "")
                    .replace("\\u0000", "")
                    .replace('"', "\"\""),
            );
            out.push('"');
        }
    };
    for (name, path, kind) in FIXED {
        let value = match *name {
            "id" => Some(row.id.to_owned()),
            "properties" => {
                (!rest.is_empty()).then(|| Value::Object(std::mem::take(&mut rest)).to_string())
            }
            _ => row
                .event
                .get(*path)
                .and_then(|v| text(v, kind.starts_with("jsonb"))),
        };
        field(out, value);
    }
    for column in used {
        field(out, by_column.get(column).and_then(|v| text(v, false)));
    }
    out.push('\n');
}

fn text(value: &Value, json: bool) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) if !json => Some(s.clone()),
        Value::Bool(b) if !json => Some(b.to_string()),
        Value::Number(n) if !json => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}
