//! What the fuzz targets share: the gRPC API of an embedded tenantd in process, and the
//! oracle every response must pass.

pub mod api;
