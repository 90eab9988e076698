#!/usr/bin/env python3
"""OpenAPI checks for readerd, run by tests/it/api_openapi.rs.

    check.py spec DOCUMENT
        Validates DOCUMENT (OpenAPI 3.1) with openapi-spec-validator.
    check.py responses DOCUMENT SAMPLES
        SAMPLES is a JSON list of {"method", "route", "status", "content_type", "body"} taken
        from a real daemon. Each JSON body is validated (jsonschema, draft 2020-12, the
        dialect of OpenAPI 3.1) against the schema the document gives for that route and
        status; a status the route does not document fails, and so does a documented
        (route, status) that no sample covers.

Exit status: 0 all good, 1 a check failed, 2 the validators are not installed.
"""
import json
import sys

INSTALL = (
    "the OpenAPI validators are not installed: run\n"
    "  python3 -m venv .venv && .venv/bin/pip install -r tests/openapi/requirements.txt\n"
    "(in the repository; the tests use .venv/bin/python, or $READERD_PYTHON)"
)

try:
    import jsonschema
    from openapi_spec_validator import validate
except ImportError as e:  # pragma: no cover - the message is the point
    print(f"{INSTALL}\n({e})", file=sys.stderr)
    sys.exit(2)


def spec(path):
    with open(path) as f:
        doc = json.load(f)
    validate(doc)
    if not doc.get("openapi", "").startswith("3.1"):
        print(f"{path}: openapi is {doc.get('openapi')!r}, not 3.1", file=sys.stderr)
        return 1
    print(f"{path}: valid OpenAPI {doc['openapi']}, {len(doc['paths'])} paths")
    return 0


def pointer(*parts):
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def closed(node):
    if isinstance(node, list):
        return [closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: closed(v) for k, v in node.items()}
    if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def responses(doc_path, samples_path):
    with open(doc_path) as f:
        doc = json.load(f)
    with open(samples_path) as f:
        samples = json.load(f)
    failures = []
    covered = set()
    # A field the document does not list is drift too: objects with listed properties
    # admit no others here (maps, which list none, keep their additionalProperties).
    strict = closed(doc)
    for s in samples:
        method, route, status = s["method"].lower(), s["route"], str(s["status"])
        where = f'{s["method"]} {route} -> {status}'
        op = doc["paths"].get(route, {}).get(method)
        if op is None:
            failures.append(f"{where}: the document has no such operation")
            continue
        if status not in op["responses"]:
            failures.append(f"{where}: status not documented ({sorted(op['responses'])})")
            continue
        covered.add((method, route, status))
        content = op["responses"][status].get("content", {})
        ctype = (s.get("content_type") or "").split(";")[0].strip()
        if ctype not in content:
            failures.append(f"{where}: content type {ctype!r} not documented ({sorted(content)})")
            continue
        if ctype != "application/json":
            continue
        # The whole document is the root schema, so that its $refs resolve; the $ref picks
        # the response's schema. Unknown top-level keywords (openapi, paths…) are ignored.
        schema = dict(strict)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$ref"] = pointer("paths", route, method, "responses", status, "content", ctype, "schema")
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(s["body"]), key=lambda e: list(e.path))
        for e in errors[:3]:
            at = "/".join(str(p) for p in e.path) or "(body)"
            failures.append(f"{where}: {at}: {e.message}")
    for route, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            for status in op["responses"]:
                if status != "default" and (method, route, status) not in covered:
                    failures.append(f"{method.upper()} {route} -> {status}: documented, but no answer was checked")
    for f in failures:
        print(f, file=sys.stderr)
    print(f"{len(samples)} answers checked, {len(covered)} documented (route, status) pairs covered, {len(failures)} problems")
    return 1 if failures else 0


def main(argv):
    if len(argv) == 3 and argv[1] == "spec":
        return spec(argv[2])
    if len(argv) == 4 and argv[1] == "responses":
        return responses(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
