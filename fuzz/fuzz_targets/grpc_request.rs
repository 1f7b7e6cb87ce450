//! Every unary `tenant.v1` method of an embedded tenantd, called in process with fuzzed
//! bytes as the request message: prost decoding, the conversion to use-case inputs,
//! validation, authorization and the use cases themselves (`tenantd_fuzz::api`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenantd_fuzz::api::Api;

fuzz_target!(|input: &[u8]| Api::get().check(input));
