//! The API's methods as the compiled-in descriptor set lists them, for callers that walk
//! every one (the fuzz targets and their seed corpus).

use prost::Message as _;
use prost_types::FileDescriptorSet;

use crate::proto;

/// The unary methods of the `tenant.v1` services as request paths
/// (`/tenant.v1.TenantService/CreateTenant`), sorted.
///
/// # Panics
/// Never: the descriptor set is the one the build compiled in.
pub fn unary_methods() -> Vec<String> {
    let files = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled-in descriptor set decodes");
    let mut methods: Vec<String> = files
        .file
        .iter()
        .filter(|file| file.package() == "tenant.v1")
        .flat_map(|file| &file.service)
        .flat_map(|service| {
            service
                .method
                .iter()
                .filter(|m| !m.client_streaming() && !m.server_streaming())
                .map(move |m| format!("/tenant.v1.{}/{}", service.name(), m.name()))
        })
        .collect();
    methods.sort();
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_unary_methods_of_every_service_and_no_stream() {
        let methods = unary_methods();
        for expected in [
            "/tenant.v1.TenantService/CreateTenant",
            "/tenant.v1.ApiKeyService/VerifyApiKey",
            "/tenant.v1.PlanService/ListPlans",
        ] {
            assert!(methods.iter().any(|m| m == expected), "{expected} missing");
        }
        assert!(
            !methods.iter().any(|m| m.ends_with("/WatchProvisioning")),
            "a streaming method listed"
        );
        assert!(methods.is_sorted());
    }
}
