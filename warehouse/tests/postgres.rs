//! The PostgreSQL warehouse against a real server (`SLUICE_TEST_POSTGRES_URL`, default the
//! local `test` database); each test writes to a schema of its own.

use serde_json::{Map, Value, json};
use sluice_warehouse::{Postgres, Row, Warehouse, WriteError};
use sqlx::{Connection, PgConnection, Row as _};

fn url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn connect() -> PgConnection {
    PgConnection::connect(&url())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is required for these tests: {e}", url()))
}

fn schema() -> String {
    format!(
        "wh_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

async fn drop_schema(schema: &str) {
    let mut conn = connect().await;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .ok();
}

fn event(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn rows<'a>(events: &'a [(String, Map<String, Value>)]) -> Vec<Row<'a>> {
    events.iter().map(|(id, event)| Row { id, event }).collect()
}

fn order(i: usize) -> (String, Map<String, Value>) {
    (
        format!("m-{i}"),
        event(
            json!({"type": "track", "event": "Order Completed", "user_id": format!("u-{i}"),
            "timestamp": "2026-12-07T10:00:00.000Z", "received_at": "2026-12-07T10:00:01.000Z",
            "context": {"ip": "203.0.113.9"}, "properties": {"revenue": 10.5 + i as f64, "currency": "EUR",
            "items": [{"sku": "a"}], "Coupon Code": "X"}}),
        ),
    )
}

#[tokio::test]
async fn a_batch_lands_in_typed_columns_once_however_often_it_is_delivered() {
    let schema = schema();
    let warehouse = Postgres::new(&url(), &schema, "events").expect("warehouse");
    let events: Vec<_> = (0..50).map(order).collect();
    assert_eq!(warehouse.write(&rows(&events)).await.expect("written"), 50);
    // Delivered again (a crash between the commit and the acknowledgement): nothing twice.
    assert_eq!(warehouse.write(&rows(&events)).await.expect("written"), 0);
    let overlapping: Vec<_> = (40..60).map(order).collect();
    assert_eq!(
        warehouse.write(&rows(&overlapping)).await.expect("written"),
        10
    );

    let mut conn = connect().await;
    let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.events"))
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(count, 60);
    let row = sqlx::query(&format!(
        "SELECT revenue, currency, coupon_code, properties::text, user_id, context->>'ip', \
         extract(epoch from timestamp)::bigint FROM {schema}.events WHERE id = 'm-3'"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("row");
    assert_eq!(row.get::<f64, _>(0), 13.5);
    assert_eq!(row.get::<String, _>(1), "EUR");
    assert_eq!(row.get::<String, _>(2), "X", "Coupon Code as a column name");
    assert_eq!(
        row.get::<String, _>(3),
        r#"{"items": [{"sku": "a"}]}"#,
        "nested values as JSON"
    );
    assert_eq!(row.get::<String, _>(4), "u-3");
    assert_eq!(row.get::<String, _>(5), "203.0.113.9");
    assert_eq!(row.get::<i64, _>(6), 1_796_637_600);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn new_properties_add_columns_and_a_type_change_keeps_the_value_as_json() {
    let schema = schema();
    let warehouse = Postgres::new(&url(), &schema, "events").expect("warehouse");
    let first = vec![(
        "a".to_owned(),
        event(json!({"type": "track", "properties": {"plan": "pro"}})),
    )];
    warehouse.write(&rows(&first)).await.expect("written");
    let later = vec![(
        "b".to_owned(),
        event(
            json!({"type": "track", "properties": {"plan": 3, "seats": 12, "trial": true,
            "\"; DROP TABLE events; --": "x", "type": "shadow"}}),
        ),
    )];
    warehouse.write(&rows(&later)).await.expect("written");
    let mut conn = connect().await;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = 'events' ORDER BY ordinal_position",
    )
    .bind(&schema)
    .fetch_all(&mut conn)
    .await
    .expect("columns");
    let kind = |name: &str| {
        columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k.as_str())
    };
    assert_eq!(kind("plan"), Some("text"));
    assert_eq!(kind("seats"), Some("double precision"));
    assert_eq!(kind("trial"), Some("boolean"));
    assert_eq!(
        kind("drop_table_events"),
        Some("text"),
        "a hostile name, made safe"
    );
    assert_eq!(
        kind("p_type"),
        Some("text"),
        "a property named like an envelope column"
    );
    let row = sqlx::query(&format!(
        "SELECT plan, seats, properties->>'plan' FROM {schema}.events WHERE id = 'b'"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("row");
    assert_eq!(
        row.get::<Option<String>, _>(0),
        None,
        "a number is not written into a text column"
    );
    assert_eq!(row.get::<f64, _>(1), 12.0);
    assert_eq!(row.get::<String, _>(2), "3", "but kept, as JSON");
    drop_schema(&schema).await;
}

#[tokio::test]
async fn a_dead_database_is_worth_retrying_and_bad_data_is_not() {
    let dead =
        Postgres::new("postgres://postgres@127.0.0.1:9/test", "public", "events").expect("lazy");
    let events = vec![order(1)];
    assert!(matches!(
        dead.write(&rows(&events)).await,
        Err(WriteError::Unavailable(_))
    ));

    let schema = schema();
    let warehouse = Postgres::new(&url(), &schema, "events").expect("warehouse");
    let bad = vec![(
        "x".to_owned(),
        event(json!({"type": "track", "timestamp": "yesterday-ish"})),
    )];
    match warehouse.write(&rows(&bad)).await {
        Err(WriteError::Refused(why)) => assert!(why.contains("SQLSTATE 22"), "{why}"),
        other => panic!("refused for good, not {other:?}"),
    }
    // Nothing half-written: the good row of a refused batch is not there either.
    let mixed = vec![order(1), bad[0].clone()];
    assert!(warehouse.write(&rows(&mixed)).await.is_err());
    let mut conn = connect().await;
    let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.events"))
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(count, 0);
    assert!(Postgres::new("not a url", "public", "events").is_err());
    drop_schema(&schema).await;
}
