#!/usr/bin/env python3
"""A tenantd client in Python, as another service would write one.

Stubs are generated from the repository's proto/ at start (grpcio-tools), so the example
always speaks the API of the checkout it is run from. Over mutual TLS it checks health,
creates a tenant, follows its provisioning with WatchProvisioning until the run settles,
creates an API key and verifies it, and reads the google.rpc details (ErrorInfo,
BadRequest) of a create refused for its slug. Every step is checked: any surprise exits
non-zero.

    pip install -r examples/python/requirements.txt
    python3 examples/python/tenants.py --endpoint 127.0.0.1:50051 \\
        --certs .tenantd/dev-certs --slug python-example
"""

import argparse
import importlib
import pathlib
import sys
import tempfile
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTOS = ["tenant", "provisioning", "api_key", "plan", "event", "migration", "errors"]


def generate_stubs(out: pathlib.Path):
    """Generates tenant.v1's messages and stubs into `out` and imports them."""
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}",
            f"--python_out={out}", f"--grpc_python_out={out}"]
    args += [str(ROOT / "proto" / "tenant" / "v1" / f"{name}.proto") for name in PROTOS]
    if protoc.main(args) != 0:
        sys.exit("tenants.py: protoc could not compile proto/")
    sys.path.insert(0, str(out))
    return {name: (importlib.import_module(f"tenant.v1.{name}_pb2"),
                   importlib.import_module(f"tenant.v1.{name}_pb2_grpc"))
            for name in PROTOS}


def expect(condition: bool, what: str):
    if not condition:
        sys.exit(f"tenants.py: FAILED: {what}")
    print(f"ok: {what}")


def channel(endpoint: str, certs: pathlib.Path) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "admin.key").read_bytes(),
        certificate_chain=(certs / "admin.pem").read_bytes(),
    )
    # The development certificates name the server "localhost".
    return grpc.secure_channel(endpoint, credentials,
                               options=[("grpc.ssl_target_name_override", "localhost")])


def refused_details(err: grpc.RpcError):
    """The ErrorInfo and BadRequest a refused call carried."""
    status = rpc_status.from_call(err)
    info, bad = None, None
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
    return info, bad


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="127.0.0.1:50051")
    parser.add_argument("--certs", type=pathlib.Path, default=pathlib.Path(".tenantd/dev-certs"))
    parser.add_argument("--slug", default="python-example")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        pb = generate_stubs(pathlib.Path(out))
        tenant_pb2, tenant_grpc = pb["tenant"]
        provisioning_pb2, provisioning_grpc = pb["provisioning"]
        api_key_pb2, api_key_grpc = pb["api_key"]
        with channel(args.endpoint, args.certs) as chan:
            health = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10)
            expect(health.status == health_pb2.HealthCheckResponse.SERVING, "health is SERVING")

            tenants = tenant_grpc.TenantServiceStub(chan)
            created = tenants.CreateTenant(tenant_pb2.CreateTenantRequest(
                tenant=tenant_pb2.Tenant(
                    slug=args.slug, display_name="Python Example", plan_id="pro",
                    contact_email=f"ops@{args.slug}.example", labels={"client": "python"}),
                request_id=str(uuid.uuid4())), timeout=10)
            tenant_id = created.tenant.tenant_id
            expect(created.tenant.slug == args.slug and tenant_id, f"created tenant {tenant_id}")

            last = None
            for update in provisioning_grpc.ProvisioningServiceStub(chan).WatchProvisioning(
                    provisioning_pb2.WatchProvisioningRequest(tenant_id=tenant_id), timeout=60):
                last = update.run
                print(f"   run {provisioning_pb2.RunState.Name(last.state)}")
            expect(last is not None and last.state == provisioning_pb2.RUN_STATE_SUCCEEDED,
                   "provisioning followed to RUN_STATE_SUCCEEDED")
            active = tenants.GetTenant(tenant_pb2.GetTenantRequest(tenant_id=tenant_id),
                                       timeout=10).tenant
            expect(active.status == tenant_pb2.TENANT_STATUS_ACTIVE, "the tenant is ACTIVE")

            keys = api_key_grpc.ApiKeyServiceStub(chan)
            key = keys.CreateApiKey(api_key_pb2.CreateApiKeyRequest(
                tenant_id=tenant_id, display_name="python example"), timeout=10)
            verified = keys.VerifyApiKey(api_key_pb2.VerifyApiKeyRequest(api_key=key.secret),
                                         timeout=10)
            expect(verified.valid and verified.tenant_id == tenant_id and verified.tenant_active,
                   "the new API key verifies for its tenant")
            forged = keys.VerifyApiKey(api_key_pb2.VerifyApiKeyRequest(
                api_key=key.secret[:-4] + "AAAA"), timeout=10)
            expect(not forged.valid, "a forged key does not verify")

            try:
                tenants.CreateTenant(tenant_pb2.CreateTenantRequest(tenant=tenant_pb2.Tenant(
                    slug="Not A Slug!", display_name="Bad", plan_id="pro",
                    contact_email="ops@bad.example")), timeout=10)
                expect(False, "an invalid slug is refused")
            except grpc.RpcError as err:
                expect(err.code() == grpc.StatusCode.INVALID_ARGUMENT,
                       f"an invalid slug is refused with INVALID_ARGUMENT ({err.details()})")
                info, bad = refused_details(err)
                expect(info is not None and info.domain == "tenantd.dev" and info.reason,
                       f"ErrorInfo reason {info.reason if info else None}, domain tenantd.dev")
                fields = [v.field for v in bad.field_violations] if bad else []
                expect("tenant.slug" in fields, f"BadRequest names the field: {fields}")
    print("tenants.py: every step as expected")


if __name__ == "__main__":
    main()
