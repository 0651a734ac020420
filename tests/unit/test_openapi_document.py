"""envoy/openapi.json: current with protos/, a valid OpenAPI document, one operation for
every google.api.http rule, in the proto3 JSON mapping the transcoder speaks; and
the generator (scripts/openapi.py) on a proto that uses what ours do not yet."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

from tahoe_auth.v1 import (
    account_pb2,
    audit_pb2,
    auth_pb2,
    dashboard_pb2,
    decision_pb2,
    keys_pb2,
    mfa_pb2,
    session_pb2,
    tenant_pb2,
    usage_pb2,
    webhooks_pb2,
)

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "envoy" / "openapi.json"
MODULES = (
    account_pb2,
    audit_pb2,
    auth_pb2,
    dashboard_pb2,
    decision_pb2,
    keys_pb2,
    mfa_pb2,
    session_pb2,
    tenant_pb2,
    usage_pb2,
    webhooks_pb2,
)


def load_script(name: str) -> ModuleType:
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)  # gen_protos imports openapi from beside it
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_script("openapi")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return loaded


def http_rules() -> list[tuple[str, str, str, str]]:
    """(verb, path, service, method) of every rule, read from the generated stubs (not
    from the descriptor set the generator reads)."""
    rules = []
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                top = options.Extensions[annotations_pb2.http]
                for rule in (top, *top.additional_bindings):
                    kind = rule.WhichOneof("pattern")
                    verb, path = (
                        (rule.custom.kind.lower(), rule.custom.path)
                        if kind == "custom"
                        else (kind, getattr(rule, kind))
                    )
                    rules.append((verb, path, service.name, method.name))
    return rules


def test_the_committed_document_is_what_make_proto_writes(generator: ModuleType, tmp_path: Path) -> None:
    fresh = load_script("gen_protos").generate_descriptor_set(tmp_path / "set.pb")
    assert DOCUMENT.read_text() == generator.render(generator.load(fresh)), "run `make proto`"


def test_it_is_a_valid_openapi_document(document: dict[str, Any]) -> None:
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"].startswith("3.1")


def test_every_http_rule_has_its_operation(document: dict[str, Any]) -> None:
    rules = http_rules()
    assert len(rules) >= 6
    ids = set()
    # Paths that differ only in their variables' names share one (OpenAPI forbids both).
    by_shape = {re.sub(r"\{[^}]*\}", "{}", p): p for p in document["paths"]}
    for verb, path, service, method in rules:
        operation = document["paths"][by_shape[re.sub(r"\{[^}]*\}", "{}", path)]][verb]
        assert operation["operationId"].startswith(f"{service}_{method}") and operation["tags"] == [service]
        ids.add(operation["operationId"])
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert len(operations) == len(rules) == len(ids)  # nothing else, and operation ids are unique


def test_operations_follow_the_proto_comments_paths_and_policies(document: dict[str, Any]) -> None:
    login = document["paths"]["/auth/v1/login"]["post"]
    assert login["summary"].startswith("Exchanges a tenant, email and password")
    assert login["security"] == []  # public: no bearer
    body = login["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/tahoe_auth.v1.LoginRequest"}
    assert login["responses"]["default"] == {"$ref": "#/components/responses/Error"}
    users = document["paths"]["/auth/v1/tenants/{tenant_id}/users"]["get"]
    assert "security" not in users and users["x-tahoe-permission"] == "users:read"  # the document's bearer
    params = {(p["in"], p["name"]): p for p in users["parameters"]}
    assert set(params) == {("path", "tenant_id"), ("query", "pageSize"), ("query", "pageToken")} | {
        ("query", "role"),
        ("query", "state"),
    }
    assert params[("path", "tenant_id")]["required"] is True
    assert params[("query", "state")]["schema"] == {"$ref": "#/components/schemas/tahoe_auth.v1.UserState"}
    record = document["paths"]["/auth/v1/tenants/{tenant_id}/usage:record"]["post"]
    record_body = record["requestBody"]["content"]["application/json"]["schema"]
    assert set(record_body["properties"]) == {"event"}  # body "*" less the path's tenant_id
    watch = document["paths"]["/auth/v1/tenants/{tenant_id}/usage:watch"]["get"]
    assert set(watch["responses"]["200"]["content"]) == {"application/x-ndjson"}
    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"] == {
        **document["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }


def test_schemas_use_the_proto3_json_mapping(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    token_pair = schemas["tahoe_auth.v1.TokenPair"]["properties"]
    assert token_pair["accessToken"]["type"] == "string"
    assert token_pair["accessTokenExpireTime"]["format"] == "date-time"
    assert {"type": "string", "format": "int64"}.items() <= token_pair["expiresIn"].items()  # int64 as a string
    assert schemas["tahoe_auth.v1.UsageEvent"]["properties"]["quantity"]["type"] == "number"  # a double
    assert schemas["tahoe_auth.v1.UserState"]["enum"][0] == "USER_STATE_UNSPECIFIED"
    status = schemas["google.rpc.Status"]["properties"]
    assert status["details"]["items"]["required"] == ["@type"]
    assert "ERROR_REASON_INVALID_CREDENTIALS" in schemas["tahoe_auth.v1.ErrorReason"]["enum"]
    error = document["components"]["responses"]["Error"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/google.rpc.Status"}


SAMPLE = """
syntax = "proto3";
package tahoe_auth.v1;
import "google/api/annotations.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/wrappers.proto";

// Things.
service ThingService {
  // Updates a thing.
  //
  // Only the fields in the mask.
  rpc UpdateThing(UpdateThingRequest) returns (Thing) {
    option (google.api.http) = {
      patch: "/auth/v1/tenants/{thing.tenant_id}/things/{thing.id}"
      body: "thing"
      additional_bindings {post: "/auth/v1/things/{thing.id}:update" body: "*"}
    };
  }
  rpc GetThing(GetThingRequest) returns (Thing) {
    option (google.api.http) = {get: "/auth/v1/tenants/{tenant_id}/things/{thing_id}"};
  }
  rpc ListThings(ListThingsRequest) returns (stream Thing) {
    option (google.api.http) = {get: "/auth/v1/things"};
  }
  rpc Unmapped(Thing) returns (Thing);
}

message Paging {
  int32 size = 1;
  string token = 2;
}

message GetThingRequest {
  string tenant_id = 1;
  string thing_id = 2;
}

message ListThingsRequest {
  Paging page = 1;
  repeated string labels = 2;
  uint64 after = 3;
  google.protobuf.FieldMask read_mask = 4;
}

message UpdateThingRequest {
  Thing thing = 1;
  google.protobuf.FieldMask update_mask = 2;
}

// A thing.
message Thing {
  // Its id.
  string id = 1;
  string tenant_id = 2;
  map<string, int64> counts = 3;
  bytes blob = 4;
  google.protobuf.Duration ttl = 5;
  google.protobuf.Struct extra = 6;
  oneof owner {
    string user_id = 7;
    string service_account_id = 8;
  }
  google.protobuf.StringValue nickname = 9;
  Kind kind = 10;
  enum Kind {
    KIND_UNSPECIFIED = 0;
    // Big ones.
    KIND_BIG = 1;
  }
}
"""


@pytest.fixture(scope="module")
def sample(generator: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("proto")
    (tmp / "tahoe_auth" / "v1").mkdir(parents=True)
    (tmp / "tahoe_auth" / "v1" / "things.proto").write_text(SAMPLE)
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out = tmp / "set.pb"
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp}", f"-I{ROOT / 'protos'}", f"-I{well_known}"]
    command += [
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        "tahoe_auth/v1/things.proto",
        *("google/rpc/status.proto", "google/rpc/error_details.proto"),  # as make proto adds them
    ]
    subprocess.run(command, check=True)
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    built: dict[str, Any] = generator.Builder(generator.Descriptors(files)).document()
    validate(built)
    return built


def test_nested_path_fields_a_body_field_and_additional_bindings(sample: dict[str, Any]) -> None:
    patch = sample["paths"]["/auth/v1/tenants/{thing.tenant_id}/things/{thing.id}"]["patch"]
    assert patch["operationId"] == "ThingService_UpdateThing"
    assert patch["summary"] == "Updates a thing." and patch["description"].endswith("Only the fields in the mask.")
    params = {(p["in"], p["name"]): p for p in patch["parameters"]}
    assert set(params) == {("path", "thing.tenant_id"), ("path", "thing.id"), ("query", "updateMask")}
    assert params[("path", "thing.id")]["description"] == "Its id."
    assert params[("query", "updateMask")]["schema"]["type"] == "string"  # a FieldMask
    body = patch["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/tahoe_auth.v1.Thing"}
    post = sample["paths"]["/auth/v1/things/{thing.id}:update"]["post"]
    assert post["operationId"] == "ThingService_UpdateThing2" and "parameters" in post
    assert [p["name"] for p in post["parameters"]] == ["thing.id"]  # body "*": no query parameters


def test_query_parameters_flatten_messages_and_stream_as_ndjson(sample: dict[str, Any]) -> None:
    listing = sample["paths"]["/auth/v1/things"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert set(params) == {"page.size", "page.token", "labels", "after", "readMask"}
    assert params["labels"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert params["after"]["schema"]["type"] == "string"  # uint64
    assert set(listing["responses"]["200"]["content"]) == {"application/x-ndjson"}
    assert len([op for item in sample["paths"].values() for op in item]) == 4  # Unmapped has no rule


def test_sample_schemas(sample: dict[str, Any]) -> None:
    thing = sample["components"]["schemas"]["tahoe_auth.v1.Thing"]
    props = thing["properties"]
    assert thing["description"] == "A thing."
    assert props["counts"] == {"type": "object", "additionalProperties": {"type": "string", "format": "int64"}}
    assert props["blob"]["format"] == "byte"
    assert props["ttl"]["type"] == "string" and props["ttl"]["pattern"]
    assert props["extra"] == {"type": "object", "additionalProperties": True}
    assert "oneof `owner`" in props["userId"]["description"]
    assert props["nickname"]["type"] == ["string", "null"]
    kind = sample["components"]["schemas"]["tahoe_auth.v1.Thing.Kind"]
    assert kind["enum"] == ["KIND_UNSPECIFIED", "KIND_BIG"] and "`KIND_BIG`: Big ones." in kind["description"]
    assert "tahoe_auth.v1.Paging" not in sample["components"]["schemas"]  # only in query parameters


def test_one_url_shape_is_one_path_whatever_its_variables_are_called(sample: dict[str, Any]) -> None:
    (path,) = [p for p in sample["paths"] if p.startswith("/auth/v1/tenants/")]
    assert set(sample["paths"][path]) == {"patch", "get"}  # UpdateThing named it first
    get = sample["paths"][path]["get"]
    assert [p["name"] for p in get["parameters"]] == ["thing.tenant_id", "thing.id"]
    assert get["parameters"][1]["description"].startswith("The request's `thing_id`.")
