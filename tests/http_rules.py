"""The JSON API's HTTP rules (google.api.http annotations) as tests read them: from the
committed descriptor set Envoy's transcoder loads (envoy/tahoe_auth.pb), or from the
generated modules, and a request message turned into the HTTP call the transcoder maps
back to it (path variables, body, the rest as query parameters)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, json_format, message

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = ROOT / "envoy" / "tahoe_auth.pb"
VERBS = ("get", "put", "post", "delete", "patch")
# `{field.path}` or `{field.path=pattern}` in a path template
VARIABLE = re.compile(r"\{([a-z0-9_.]+)(=[^}]*)?\}")
# Field names that hold a credential; `page_token` is a cursor, not a secret.
SECRET = re.compile(r"(^|_)(password|secret|token|credential)$")
NOT_SECRET = {"page_token", "next_page_token"}


@dataclass(frozen=True)
class Rule:
    """One binding of a method: the primary rule or one of its additional_bindings."""

    service: str  # full name
    method: descriptor.MethodDescriptor
    verb: str  # upper case
    template: str
    body: str  # "", "*" or a top-level field name

    @property
    def name(self) -> str:
        return f"{self.service}.{self.method.name} {self.verb} {self.template}"

    def path_fields(self) -> list[str]:
        return [m.group(1) for m in VARIABLE.finditer(self.template)]

    def shape(self) -> tuple[str, str]:
        """What the transcoder routes on: the method and the template, variables unnamed."""
        return self.verb, VARIABLE.sub("*", self.template)


def load_pool(path: Path = DESCRIPTOR_SET) -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


def http_rule(method: descriptor.MethodDescriptor) -> http_pb2.HttpRule | None:
    """The method's annotation (annotations_pb2 registers the extension, whichever pool
    the method comes from)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def _bindings(service: str, method: descriptor.MethodDescriptor, rule: http_pb2.HttpRule) -> Iterator[Rule]:
    pattern = rule.WhichOneof("pattern")
    if pattern in VERBS:
        yield Rule(service, method, pattern.upper(), getattr(rule, pattern), rule.body)
    elif pattern == "custom":
        yield Rule(service, method, rule.custom.kind.upper(), rule.custom.path, rule.body)
    for extra in rule.additional_bindings:
        yield from _bindings(service, method, extra)


def rules(services: list[descriptor.ServiceDescriptor]) -> list[Rule]:
    """Every binding of every method of `services` (methods without one are left out:
    see unannotated())."""
    found = []
    for service in services:
        for method in service.methods:
            rule = http_rule(method)
            if rule is not None:
                found.extend(_bindings(service.full_name, method, rule))
    return found


def method_rules(service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor) -> list[Rule]:
    rule = http_rule(method)
    return list(_bindings(service.full_name, method, rule)) if rule is not None else []


def unannotated(services: list[descriptor.ServiceDescriptor]) -> list[str]:
    return [f"{s.full_name}.{m.name}" for s in services for m in s.methods if http_rule(m) is None]


def field_at(message_type: descriptor.Descriptor, path: str) -> descriptor.FieldDescriptor:
    """The field a dotted path (`user.id`) names, from `message_type`."""
    field = None
    current: descriptor.Descriptor | None = message_type
    for part in path.split("."):
        assert current is not None, f"{path}: {part} is inside a scalar"
        field = current.fields_by_name[part]
        current = field.message_type
    assert field is not None
    return field


def leaf_fields(
    message_type: descriptor.Descriptor, prefix: str = ""
) -> Iterator[tuple[str, descriptor.FieldDescriptor]]:
    """(dotted path, field) of every field a query string could set, nested messages
    included; well-known types (Timestamp, Struct, ...) count as one value."""
    for field in message_type.fields:
        path = f"{prefix}{field.name}"
        yield path, field
        sub = field.message_type
        if sub is not None and not sub.full_name.startswith("google.protobuf.") and not sub.GetOptions().map_entry:
            yield from leaf_fields(sub, f"{path}.")


def outside_body(rule: Rule) -> list[tuple[str, descriptor.FieldDescriptor]]:
    """The fields this binding takes from the URL: its path variables and, unless the
    body is the whole request, every other field not in the body, as query parameters."""
    request = rule.method.input_type
    in_path = rule.path_fields()
    fields = [(path, field_at(request, path)) for path in in_path]
    if rule.body == "*":
        return fields
    for path, field in leaf_fields(request):
        top = path.split(".", 1)[0]
        if top == rule.body or path in in_path or any(p.startswith(f"{path}.") for p in in_path):
            continue
        fields.append((path, field))
    return fields


def is_secret(field: descriptor.FieldDescriptor) -> bool:
    text = field.type in (descriptor.FieldDescriptor.TYPE_STRING, descriptor.FieldDescriptor.TYPE_BYTES)
    return text and field.name not in NOT_SECRET and SECRET.search(field.name) is not None


@dataclass(frozen=True)
class HttpCall:
    method: str
    path: str  # with the query string
    body: Any  # None: no body


def to_http(rule: Rule, request: message.Message, overrides: dict[str, str] | None = None) -> HttpCall:
    """`request` as the transcoder expects it for this binding; `overrides` sets path
    variables (e.g. a tenant_id the request leaves empty, which a URL cannot)."""
    as_json = json_format.MessageToDict(request)  # JSON names, well-known types as JSON
    path = rule.template
    for field_path in rule.path_fields():
        value = _pop(as_json, json_path(rule.method.input_type, field_path))
        value = (overrides or {}).get(field_path) or value
        path = path.replace(f"{{{field_path}}}", urllib.parse.quote(str(value), safe=""))
    if rule.body == "*":
        return HttpCall(rule.verb, path, as_json)
    body = as_json.pop(json_path(rule.method.input_type, rule.body), {}) if rule.body else None
    query = list(_query(as_json))
    if query:
        path += "?" + urllib.parse.urlencode(query)
    return HttpCall(rule.verb, path, body)


def json_path(message_type: descriptor.Descriptor, path: str) -> str:
    """A dotted path of proto field names in JSON names (`service_account.id` ->
    `serviceAccount.id`)."""
    names = []
    current: descriptor.Descriptor | None = message_type
    for part in path.split("."):
        assert current is not None
        field = current.fields_by_name[part]
        names.append(field.json_name)
        current = field.message_type
    return ".".join(names)


def _pop(tree: dict[str, Any], path: str) -> Any:
    *parents, last = path.split(".")
    for part in parents:
        tree = tree.get(part, {})
    return tree.pop(last, "")


def _query(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _query(value, f"{name}.")
        elif isinstance(value, list):
            for item in value:
                yield name, _scalar(item)
        else:
            yield name, _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
