//! The SQL of each table that more than one port writes, with its row types: the port
//! implementations (one file per port, beside this module) compose these statements in
//! their transactions. Nothing here opens a transaction or imports a port file.

pub(crate) mod api_keys;
pub(crate) mod events;
pub(crate) mod runs;
pub(crate) mod tenants;
