//! The warehouse destination: canonical events appended to a table with a stable, documented
//! schema (`tracklayer_events`, README "Destinations"), one row per event_id, so a re-sent
//! delivery is a no-op. New frontend properties land in `properties_json`; columns never change
//! because of them. A change of columns is a new `SCHEMA_VERSION`, recorded in the database
//! beside the table (`tracklayer_warehouse_schema`).
//!
//! In an SQLite file (`path`), or in a PostgreSQL database and schema the user names (`url`,
//! `schema`), for teams whose warehouse is PostgreSQL or fed from it.

use crate::destinations::WarehouseTarget;

pub use crate::store::sqlite::warehouse::{read_rows, SqliteWarehouse};

pub use crate::store::model::warehouse::{WarehouseForget, WarehouseSink, SCHEMA_VERSION};

/// Open the sink a warehouse destination names (creating its table if missing).
pub fn open(target: &WarehouseTarget) -> Result<Box<dyn WarehouseSink>, String> {
    Ok(match target {
        WarehouseTarget::Sqlite { path } => Box::new(SqliteWarehouse::open(path)?),
        WarehouseTarget::Postgres { url, schema } => Box::new(
            crate::store::postgres::warehouse::PostgresWarehouse::open(url.expose(), schema)?,
        ),
    })
}
