"""Validates specs against a JSON Schema with the `jsonschema` package (an implementation
independent of the reconciler's), for tests/spec_properties.rs.

Usage: schema-check.py SCHEMA.json CASES.json -> prints a JSON list: true where the case
(one element of CASES, a spec as JSON) is valid under the schema, false where it is not."""

import json
import sys

import jsonschema

schema = json.load(open(sys.argv[1]))
cls = jsonschema.validators.validator_for(schema)
cls.check_schema(schema)
validator = cls(schema)
cases = json.load(open(sys.argv[2]))
print(json.dumps([validator.is_valid(case) for case in cases]))
