"""Write the JSON API's OpenAPI 3.1 document, envoy/openapi.json, from the descriptor
set that Envoy's transcoder reads (envoy/tahoe_auth.pb): one operation per
google.api.http rule (additional bindings included), described by the proto comments,
with schemas in the proto3 JSON mapping the transcoder speaks. Envoy serves the file
at GET /auth/v1/openapi.json, so it describes exactly the routes Envoy transcodes.

    .venv/bin/python scripts/openapi.py [--check]

`make proto` writes it after the descriptor set (scripts/gen_protos.py, whose --check
in `make lint` fails when it is stale); `--check` here checks the document alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTOR_SET = ROOT / "envoy" / "tahoe_auth.pb"
TARGET = ROOT / "envoy" / "openapi.json"
PACKAGE = "tahoe_auth.v1"
OPENAPI_VERSION = "3.1.0"

F = descriptor_pb2.FieldDescriptorProto
# proto3 JSON: 64-bit integers are strings (JavaScript numbers lose precision past 2^53).
SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    F.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    F.TYPE_INT64: {"type": "string", "format": "int64"},
    F.TYPE_SINT64: {"type": "string", "format": "int64"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}
_WRAPPERS = {
    "DoubleValue": F.TYPE_DOUBLE,
    "FloatValue": F.TYPE_FLOAT,
    "Int64Value": F.TYPE_INT64,
    "UInt64Value": F.TYPE_UINT64,
    "Int32Value": F.TYPE_INT32,
    "UInt32Value": F.TYPE_UINT32,
    "BoolValue": F.TYPE_BOOL,
    "StringValue": F.TYPE_STRING,
    "BytesValue": F.TYPE_BYTES,
}
# Well-known types have their own JSON forms; they are written inline, not as schemas.
WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": "A duration in seconds with an `s` suffix, such as `3.5s`.",
    },
    ".google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths in lowerCamelCase, such as `displayName,roles`.",
    },
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {"description": "Any JSON value."},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.NullValue": {"type": "null"},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string", "description": "The message's type URL."}},
        "required": ["@type"],
        "additionalProperties": True,
        "description": "A message of the type `@type` names, its fields beside `@type`.",
    },
    # Wrappers: their value, or null.
    **{
        f".google.protobuf.{name}": {**SCALARS[kind], "type": [SCALARS[kind]["type"], "null"]}
        for name, kind in _WRAPPERS.items()
    },
}
# Not reached from any request or response, but in every error's details.
ERROR_TYPES = (".google.rpc.Status", ".google.rpc.ErrorInfo", ".google.rpc.RetryInfo", ".google.rpc.QuotaFailure")
ERROR_REASONS = f".{PACKAGE}.ErrorReason"
VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
# OpenAPI's operations (a custom HTTP rule may name HEAD or OPTIONS).
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


@dataclass
class Message:
    proto: descriptor_pb2.DescriptorProto
    comments: dict[str, str] = field(default_factory=dict)  # "" = the message, else a field's name
    description: str = ""


@dataclass
class Enum:
    proto: descriptor_pb2.EnumDescriptorProto
    description: str = ""
    values: dict[str, str] = field(default_factory=dict)


@dataclass
class Rule:
    service: str
    method: descriptor_pb2.MethodDescriptorProto
    description: str
    verb: str
    path: str
    body: str
    response_body: str


def comment(location: descriptor_pb2.SourceCodeInfo.Location | None) -> str:
    if location is None:
        return ""
    lines = location.leading_comments.splitlines()
    # protoc keeps the space after `//`; paragraphs stay apart.
    return "\n".join(line[1:] if line.startswith(" ") else line for line in lines).strip()


class Descriptors:
    """Every message, enum and HTTP rule of a FileDescriptorSet, with their comments."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, Message] = {}
        self.enums: dict[str, Enum] = {}
        self.services: dict[str, str] = {}  # short name -> description
        self.rules: list[Rule] = []
        for file in files.file:
            locations = {tuple(loc.path): loc for loc in file.source_code_info.location}
            prefix = f".{file.package}" if file.package else ""
            for i, message in enumerate(file.message_type):
                self._message(message, prefix, (4, i), locations)
            for i, enum in enumerate(file.enum_type):
                self._enum(enum, prefix, (5, i), locations)
            if file.package != PACKAGE:
                continue
            for i, service in enumerate(file.service):
                self.services[service.name] = comment(locations.get((6, i)))
                for j, method in enumerate(service.method):
                    self.rules.extend(self._rules(service.name, method, comment(locations.get((6, i, 2, j)))))

    def _message(self, proto: descriptor_pb2.DescriptorProto, prefix: str, path: tuple[int, ...], locs: Any) -> None:
        name = f"{prefix}.{proto.name}"
        message = Message(proto, description=comment(locs.get(path)))
        for i, f in enumerate(proto.field):
            message.comments[f.name] = comment(locs.get((*path, 2, i)))
        self.messages[name] = message
        for i, nested in enumerate(proto.nested_type):
            self._message(nested, name, (*path, 3, i), locs)
        for i, enum in enumerate(proto.enum_type):
            self._enum(enum, name, (*path, 4, i), locs)

    def _enum(self, proto: descriptor_pb2.EnumDescriptorProto, prefix: str, path: tuple[int, ...], locs: Any) -> None:
        values = {v.name: comment(locs.get((*path, 2, i))) for i, v in enumerate(proto.value)}
        self.enums[f"{prefix}.{proto.name}"] = Enum(proto, comment(locs.get(path)), values)

    def _rules(self, service: str, method: descriptor_pb2.MethodDescriptorProto, description: str) -> Iterator[Rule]:
        if not method.options.HasExtension(annotations_pb2.http):
            return
        top: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
        for rule in (top, *top.additional_bindings):
            kind = rule.WhichOneof("pattern")
            if kind is None:
                continue
            if kind == "custom":
                verb, path = rule.custom.kind.lower(), rule.custom.path
            else:
                verb, path = kind, getattr(rule, kind)
            yield Rule(service, method, description, verb, path, rule.body, rule.response_body)


def json_name(f: descriptor_pb2.FieldDescriptorProto) -> str:
    if f.json_name:
        return f.json_name
    head, *rest = f.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def schema_name(type_name: str) -> str:
    return type_name.lstrip(".")


def ref(type_name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{schema_name(type_name)}"}


class Builder:
    """Builds the document; every message and enum reached lands in components.schemas."""

    def __init__(self, descriptors: Descriptors, policies: dict[str, Any] | None = None) -> None:
        self.d = descriptors
        self.policies = policies or {}
        self.schemas: dict[str, Any] = {}
        self._pending: list[str] = []

    # --- schemas -------------------------------------------------------------

    def type_schema(self, type_name: str) -> dict[str, Any]:
        """A reference to a message or enum (queued for components), or a well-known type inline."""
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        if schema_name(type_name) not in self.schemas and type_name not in self._pending:
            self._pending.append(type_name)
        return ref(type_name)

    def field_schema(self, f: descriptor_pb2.FieldDescriptorProto, *, element: bool = False) -> dict[str, Any]:
        if f.label == F.LABEL_REPEATED and not element:
            entry = self.map_entry(f)
            if entry is not None:
                value = next(v for v in entry.field if v.number == 2)
                return {"type": "object", "additionalProperties": self.field_schema(value)}
            return {"type": "array", "items": self.field_schema(f, element=True)}
        if f.type in (F.TYPE_MESSAGE, F.TYPE_ENUM, F.TYPE_GROUP):
            return self.type_schema(f.type_name)
        return dict(SCALARS[f.type])

    def map_entry(self, f: descriptor_pb2.FieldDescriptorProto) -> descriptor_pb2.DescriptorProto | None:
        if f.type != F.TYPE_MESSAGE:
            return None
        message = self.d.messages.get(f.type_name)
        if message is None or not message.proto.options.map_entry:
            return None
        return message.proto

    def message_schema(self, type_name: str, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        message = self.d.messages[type_name]
        properties: dict[str, Any] = {}
        for f in message.proto.field:
            if f.name in skip:
                continue
            schema = self.field_schema(f)
            description = message.comments.get(f.name, "")
            if f.HasField("oneof_index") and not f.proto3_optional:
                group = message.proto.oneof_decl[f.oneof_index].name
                note = f"Part of the oneof `{group}`: at most one of its fields is set."
                description = f"{description}\n\n{note}" if description else note
            if description:
                schema["description"] = description
            properties[json_name(f)] = schema
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if message.description:
            schema["description"] = message.description
        return schema

    def enum_schema(self, type_name: str) -> dict[str, Any]:
        enum = self.d.enums[type_name]
        names = [v.name for v in enum.proto.value]
        described = [f"- `{name}`: {text}" for name, text in enum.values.items() if text]
        description = "\n".join(part for part in (enum.description, "\n".join(described)) if part)
        # The transcoder prints names; it also accepts the numbers (and, here, any case).
        schema: dict[str, Any] = {"type": "string", "enum": names}
        if description:
            schema["description"] = description
        return schema

    def drain(self) -> None:
        while self._pending:
            type_name = self._pending.pop(0)
            if schema_name(type_name) in self.schemas:
                continue
            if type_name in self.d.enums:
                self.schemas[schema_name(type_name)] = self.enum_schema(type_name)
            else:
                self.schemas[schema_name(type_name)] = self.message_schema(type_name)

    # --- operations ----------------------------------------------------------

    def field_at(self, type_name: str, path: str) -> descriptor_pb2.FieldDescriptorProto:
        """The field a dotted path (`user.id`) names, starting at message `type_name`."""
        current = type_name
        found: descriptor_pb2.FieldDescriptorProto | None = None
        for part in path.split("."):
            message = self.d.messages[current]
            found = next((f for f in message.proto.field if f.name == part), None)
            if found is None:
                raise SystemExit(f"{schema_name(type_name)} has no field {path!r} (named by an HTTP rule)")
            current = found.type_name
        assert found is not None
        return found

    def query_parameters(self, type_name: str, bound: set[str], prefix: str = "", depth: int = 0) -> list[Any]:
        """Every field of `type_name` neither in the path nor in the body (`bound`: proto
        paths within it): scalars, enums and repeated ones by their JSON names; a message
        by its fields' dotted names (`page.size`), as the transcoder reads them."""
        params: list[Any] = []
        message = self.d.messages[type_name]
        for f in message.proto.field:
            if f.name in bound or self.map_entry(f) is not None:
                continue
            name = prefix + json_name(f)
            if f.type == F.TYPE_MESSAGE and f.type_name not in WELL_KNOWN:
                if f.label != F.LABEL_REPEATED and depth < 3 and f.type_name != type_name:
                    inner = {b.partition(".")[2] for b in bound if b.startswith(f.name + ".")}
                    params.extend(self.query_parameters(f.type_name, inner, name + ".", depth + 1))
                continue
            param: dict[str, Any] = {"name": name, "in": "query", "schema": self.field_schema(f)}
            if f.label == F.LABEL_REPEATED:
                param["explode"] = True  # ?role=a&role=b
            if message.comments.get(f.name):
                param["description"] = message.comments[f.name]
            params.append(param)
        return params

    def path_parameters(self, request: str, variables: list[str], names: list[str]) -> list[Any]:
        """`names`: the document's names for the variables (see `document`)."""
        params: list[Any] = []
        for variable, name in zip(variables, names, strict=True):
            f = self.field_at(request, variable)
            param: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": self.field_schema(f)}
            owner, _, leaf = variable.rpartition(".")
            owner_type = self.field_at(request, owner).type_name if owner else request
            text = self.d.messages[owner_type].comments.get(leaf, "")
            if name != variable:
                text = f"The request's `{variable}`. {text}".strip()
            if text:
                param["description"] = text
            params.append(param)
        return params

    def request_body(self, rule: Rule, variables: list[str]) -> tuple[dict[str, Any] | None, set[str]]:
        """The body's schema per the rule's `body` and the proto paths it and the path bind."""
        request = rule.method.input_type
        if rule.body == "*":
            # Everything but the path's fields; nested path fields stay (the path's value wins).
            top_level = frozenset(v for v in variables if "." not in v)
            schema = self.message_schema(request, top_level) if top_level else self.type_schema(request)
            return schema, {f.name for f in self.d.messages[request].proto.field}
        if not rule.body:
            return None, set(variables)
        return self.field_schema(self.field_at(request, rule.body)), {*variables, rule.body}

    def operation(self, rule: Rule, operation_id: str, names: list[str]) -> dict[str, Any]:
        variables = VARIABLE.findall(rule.path)
        op: dict[str, Any] = {"operationId": operation_id, "tags": [rule.service]}
        summary = " ".join(rule.description.partition("\n\n")[0].split())
        if summary:
            op["summary"] = summary
        if rule.description and rule.description != summary:
            op["description"] = rule.description
        body, bound = self.request_body(rule, variables)
        if body is not None:
            if rule.method.client_streaming:  # the transcoder reads a stream as a JSON array
                body = {"type": "array", "items": body}
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        params = self.path_parameters(rule.method.input_type, variables, names)
        params.extend(self.query_parameters(rule.method.input_type, bound))
        if params:
            op["parameters"] = params
        op["responses"] = {"200": self.response(rule), "default": {"$ref": "#/components/responses/Error"}}
        policy = self.policies.get(f"/{PACKAGE}.{rule.service}/{rule.method.name}")
        if getattr(policy, "public", False):
            op["security"] = []  # no credential needed
        if getattr(policy, "permission", ""):
            op["x-tahoe-permission"] = policy.permission  # in the tenant the request names
        if getattr(policy, "platform_only", False):
            op["x-tahoe-platform-only"] = True
        return op

    def response(self, rule: Rule) -> dict[str, Any]:
        output = rule.method.output_type
        if rule.response_body:
            schema = self.field_schema(self.field_at(output, rule.response_body))
        else:
            schema = self.type_schema(output)
        if rule.method.server_streaming:
            text = "A stream: one JSON object per line (a message of this schema each), until the call ends."
            return {"description": text, "content": {"application/x-ndjson": {"schema": schema}}}
        return {"description": "OK", "content": {"application/json": {"schema": schema}}}

    def document(self) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        seen: dict[str, int] = {}
        # OpenAPI forbids two paths that differ only in their variables' names
        # (/tenants/{tenant_id} and /tenants/{tenant.id}): one URL shape is one path,
        # named as its first rule names it.
        shapes: dict[str, str] = {}
        for rule in self.d.rules:
            base = f"{rule.service}_{rule.method.name}"
            seen[base] = seen.get(base, 0) + 1
            operation_id = base if seen[base] == 1 else f"{base}{seen[base]}"
            written = VARIABLE.sub(lambda m: "{" + m.group(1) + "}", rule.path)
            path = shapes.setdefault(VARIABLE.sub("{}", rule.path), written)
            item = paths.setdefault(path, {})
            if rule.verb in item:
                raise SystemExit(f"two HTTP rules bind {rule.verb.upper()} {path}")
            if rule.verb not in METHODS:
                raise SystemExit(f"{base}: OpenAPI has no method {rule.verb!r}")
            item[rule.verb] = self.operation(rule, operation_id, VARIABLE.findall(path))
        if ERROR_TYPES[0] not in self.d.messages:
            raise SystemExit("the descriptor set lacks google.rpc.Status, which every error response is")
        for name in (*ERROR_TYPES, ERROR_REASONS):
            if name in self.d.messages or name in self.d.enums:
                self.type_schema(name)
        self.drain()
        tags = [
            {"name": name, **({"description": text} if text else {})}
            for name, text in sorted(self.d.services.items())
            if any(r.service == name for r in self.d.rules)
        ]
        return {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "Tahoe Auth JSON API",
                "version": "v1",
                "description": (
                    "The gRPC API as JSON over HTTP, through Envoy's gRPC-JSON transcoder. Generated from the "
                    "google.api.http annotations in protos/ by scripts/openapi.py (`make proto`); docs/http-api.md "
                    "shows it in use. Fields use proto3 JSON names (lowerCamelCase); 64-bit integers are strings; "
                    "enums are their names. Requests and responses are application/json."
                ),
            },
            "paths": paths,
            "tags": tags,
            "security": [{"bearer": []}],
            "components": {
                "schemas": self.schemas,
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": (
                            "`authorization: Bearer <credential>`: an access token from /auth/v1/login, "
                            "an API key or a service token."
                        ),
                    }
                },
                "responses": {
                    "Error": {
                        "description": (
                            "An error: the gRPC status as its HTTP status (UNAUTHENTICATED 401, "
                            "PERMISSION_DENIED 403, NOT_FOUND 404, INVALID_ARGUMENT 400, RESOURCE_EXHAUSTED 429, "
                            "...) with the google.rpc.Status as JSON. Its details hold a google.rpc.ErrorInfo "
                            "(domain `tahoe.auth`) whose `reason` is a tahoe_auth.v1.ErrorReason without the "
                            "`ERROR_REASON_` prefix: branch on that, never on the message."
                        ),
                        "content": {"application/json": {"schema": ref(".google.rpc.Status")}},
                    }
                },
            },
        }


def load(path: Path = DESCRIPTOR_SET) -> descriptor_pb2.FileDescriptorSet:
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(path.read_bytes())
    return files


def method_policies() -> dict[str, Any]:
    """What each gRPC method needs (tahoe_auth.server.POLICIES): public operations need no bearer."""
    from tahoe_auth.server import POLICIES

    return dict(POLICIES)


def render(files: descriptor_pb2.FileDescriptorSet) -> str:
    document = Builder(Descriptors(files), method_policies()).document()
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--descriptors", type=Path, default=DESCRIPTOR_SET)
    args = parser.parse_args()
    text = render(load(args.descriptors))
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run `make proto`", file=sys.stderr)
            return 1
        print(f"{TARGET.relative_to(ROOT)} is up to date")
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
