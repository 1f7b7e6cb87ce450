//! [`TenantSchemaDumps`] on PostgreSQL: every table of a tenant schema, from one
//! repeatable-read snapshot, as its `CREATE TABLE` (rebuilt from the catalog: columns,
//! types, defaults, not-null and the table's constraints) and its rows as COPY's CSV,
//! streamed to the sink chunk by chunk.

use async_trait::async_trait;
use futures::TryStreamExt as _;
use sqlx::Connection as _;
use tenantd_domain::TenantId;
use tenantd_domain::ports::{DumpSink, TenantDatabases as _, TenantSchemaDumps};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::tenant_schema::Placement;

use super::databases::{PgTenantDatabases, failure, quoted};

/// One column as the catalog describes it.
#[derive(sqlx::FromRow)]
struct Column {
    name: String,
    type_name: String,
    not_null: bool,
    default: Option<String>,
}

#[async_trait]
impl TenantSchemaDumps for PgTenantDatabases {
    async fn dump(
        &self,
        _tenant: TenantId,
        placement: &Placement,
        sink: &mut dyn DumpSink,
    ) -> Result<(), StepError> {
        if !self.exists(placement).await? {
            return Ok(());
        }
        // A connection of its own, never given back to the pool: a COPY cut short (a full
        // disk, an attempt stopped mid-table) leaves its connection out of step with the
        // server, so it is closed, not reused.
        let (pool, own) = self.pool(placement)?;
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn.detach(),
            Err(err) => {
                if own {
                    pool.close().await;
                }
                return Err(failure("cannot reach the tenant database", &err));
            }
        };
        let dumped = async {
            let conn = &mut conn;
            let mut tx = conn
                .begin()
                .await
                .map_err(|e| failure("cannot read the tenant schema", &e))?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(|e| failure("cannot read the tenant schema", &e))?;
            // Tables and partitioned tables, not their partitions: a partitioned table's
            // rows are its partitions' rows.
            let tables: Vec<(sqlx::postgres::types::Oid, String)> = sqlx::query_as(
                "SELECT c.oid, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
                 ORDER BY c.relname",
            )
            .bind(&placement.schema)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| failure("cannot list the tenant schema's tables", &e))?;
            for (oid, name) in tables {
                let ddl = ddl(&mut tx, oid, &name).await?;
                // COPY of a query, which (unlike COPY of a table) also reads a partitioned
                // table.
                let copy = format!(
                    "COPY (SELECT * FROM {}.{}) TO STDOUT WITH (FORMAT csv, HEADER)",
                    quoted(&placement.schema),
                    quoted(&name)
                );
                sink.table(&name, &ddl).await?;
                // Streamed: each chunk goes to the sink as it arrives, never the whole table
                // in memory.
                let mut rows = tx
                    .copy_out_raw(&copy)
                    .await
                    .map_err(|e| failure("cannot copy a tenant table", &e))?;
                while let Some(chunk) = rows
                    .try_next()
                    .await
                    .map_err(|e| failure("cannot copy a tenant table", &e))?
                {
                    sink.rows(&chunk).await?;
                }
            }
            tx.commit()
                .await
                .map_err(|e| failure("cannot read the tenant schema", &e))?;
            Ok(())
        }
        .await;
        if dumped.is_ok() {
            let _closed = conn.close().await;
        }
        if own {
            pool.close().await;
        }
        dumped
    }
}

/// The `CREATE TABLE` of table `oid`, named `name` (without its schema, so the DDL can be
/// replayed in any schema).
async fn ddl(
    conn: &mut sqlx::PgConnection,
    oid: sqlx::postgres::types::Oid,
    name: &str,
) -> Result<String, StepError> {
    let columns: Vec<Column> = sqlx::query_as(
        "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type_name, \
                a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default \
         FROM pg_attribute a \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| failure("cannot describe a tenant table", &e))?;
    let constraints: Vec<(String, String)> = sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = $1 AND contype IN ('p', 'u', 'c', 'f') ORDER BY contype DESC, conname",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| failure("cannot describe a tenant table", &e))?;
    let mut lines: Vec<String> = columns
        .into_iter()
        .map(|c| {
            let mut line = format!("    {} {}", quoted(&c.name), c.type_name);
            if let Some(default) = c.default {
                line.push_str(" DEFAULT ");
                line.push_str(&default);
            }
            if c.not_null {
                line.push_str(" NOT NULL");
            }
            line
        })
        .collect();
    lines.extend(
        constraints
            .into_iter()
            .map(|(name, def)| format!("    CONSTRAINT {} {def}", quoted(&name))),
    );
    Ok(format!(
        "CREATE TABLE {} (\n{}\n);\n",
        quoted(name),
        lines.join(",\n")
    ))
}
