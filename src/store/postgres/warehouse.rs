//! The warehouse destination's PostgreSQL sink: `<schema>.tracklayer_events` with the same
//! columns as the SQLite table, in PostgreSQL's own types (TIMESTAMPTZ, DOUBLE PRECISION,
//! JSONB), one row per event_id.

use postgres::{Client, NoTls};
use serde_json::Value;

use crate::pipeline::CanonicalEvent;
use crate::store::model::warehouse::{WarehouseForget, WarehouseSink, SCHEMA_VERSION};

fn schema_sql(schema: &str) -> String {
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.tracklayer_events (
    event_id        TEXT PRIMARY KEY,             -- stable TrackLayer event id
    event_name      TEXT NOT NULL,                -- canonical name (purchase, add_to_cart, ...)
    segment_event   TEXT NOT NULL,                -- the Segment name it came from
    environment     TEXT NOT NULL,
    event_time      TIMESTAMPTZ NOT NULL,
    message_id      TEXT NOT NULL,                -- Segment messageId of the first arrival
    user_id         TEXT,
    anonymous_id    TEXT,
    order_id        TEXT,
    value           DOUBLE PRECISION,
    currency        TEXT,
    items_json      JSONB,                        -- JSON array of items
    properties_json JSONB NOT NULL,               -- every canonical property
    context_json    JSONB NOT NULL,               -- ip, user agent, page, click ids
    mapping_version INTEGER NOT NULL,
    loaded_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS tracklayer_events_by_time ON {schema}.tracklayer_events (event_time);
CREATE TABLE IF NOT EXISTS {schema}.tracklayer_warehouse_schema (version INTEGER NOT NULL);
"#
    )
}

pub struct PostgresWarehouse {
    url: String,
    schema: String,
    client: Option<Client>,
}

impl PostgresWarehouse {
    /// Connect and create the schema and table if missing. `schema` is a validated identifier.
    pub fn open(url: &str, schema: &str) -> Result<PostgresWarehouse, String> {
        let mut sink = PostgresWarehouse {
            url: url.to_string(),
            schema: schema.to_string(),
            client: None,
        };
        sink.client()?;
        Ok(sink)
    }

    /// The connection, opened (or re-opened after the server dropped it) on demand.
    fn client(&mut self) -> Result<&mut Client, String> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = Client::connect(&self.url, NoTls)
                .map_err(|e| format!("cannot connect to the warehouse database: {e}"))?;
            let mut tx = client.transaction().map_err(|e| e.to_string())?;
            // Two nodes creating the table at once would race on the catalog.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&self.schema],
            )
            .map_err(|e| e.to_string())?;
            tx.batch_execute(&schema_sql(&self.schema))
                .map_err(|e| format!("cannot create {}.tracklayer_events: {e}", self.schema))?;
            tx.execute(
                &format!(
                    "INSERT INTO {}.tracklayer_warehouse_schema (version)
                     SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM {}.tracklayer_warehouse_schema)",
                    self.schema, self.schema
                ),
                &[&SCHEMA_VERSION],
            )
            .map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())?;
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| "no warehouse connection".to_string())
    }
}

impl WarehouseSink for PostgresWarehouse {
    fn write(&mut self, events: &[&CanonicalEvent]) -> Result<usize, String> {
        let schema = self.schema.clone();
        let client = self.client()?;
        let mut tx = client.transaction().map_err(|e| e.to_string())?;
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {schema}.tracklayer_events (event_id, event_name, segment_event,
                     environment, event_time, message_id, user_id, anonymous_id, order_id, value,
                     currency, items_json, properties_json, context_json, mapping_version,
                     loaded_at)
                 VALUES ($1, $2, $3, $4, to_timestamp($5::double precision / 1000), $6, $7, $8,
                     $9, $10, $11, $12::text::jsonb, $13::text::jsonb, $14::text::jsonb, $15,
                     now())
                 ON CONFLICT (event_id) DO NOTHING"
            ))
            .map_err(|e| e.to_string())?;
        let mut new = 0;
        for e in events {
            let p = &e.properties;
            let mapping_version = i32::try_from(e.mapping_version).unwrap_or(i32::MAX);
            new += tx
                .execute(
                    &insert,
                    &[
                        &e.event_id,
                        &e.name,
                        &e.segment_event,
                        &e.environment,
                        &(e.event_time_ms as f64),
                        &e.message_id,
                        &e.user.user_id,
                        &e.user.anonymous_id,
                        &p.get("order_id").and_then(Value::as_str),
                        &p.get("value").and_then(Value::as_f64),
                        &p.get("currency").and_then(Value::as_str),
                        &p.get("items").map(Value::to_string),
                        &Value::Object(p.clone()).to_string(),
                        &serde_json::to_string(&e.context).unwrap_or_else(|_| "{}".into()),
                        &mapping_version,
                    ],
                )
                .map_err(|e| e.to_string())? as usize;
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(new)
    }

    fn forget(&mut self, person: &WarehouseForget) -> Result<usize, String> {
        let schema = self.schema.clone();
        let client = self.client()?;
        let deleted = client
            .execute(
                &format!(
                    "DELETE FROM {schema}.tracklayer_events
                     WHERE event_id = ANY($1) OR user_id = ANY($2) OR anonymous_id = ANY($3)"
                ),
                &[&person.event_ids, &person.user_ids, &person.anonymous_ids],
            )
            .map_err(|e| e.to_string())?;
        Ok(deleted as usize)
    }
}
