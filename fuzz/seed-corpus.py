#!/usr/bin/env python3
"""Writes the seed inputs of fuzz/corpus/ from files the repository already has.

- parse_compile: the resources of every conformance case (integration/conformance/cases),
  once as multi-document YAML and once as a JSON array, and the sandbox stages as written.
- peer_identity: the DER of the test certificates in filter/src/wasm/testdata/*.pem.

decide_path's inputs are structured (arbitrary::Arbitrary), so its corpus is grown by the
fuzzer itself and minimized with `cargo fuzz cmin` (docs/fuzzing.md). Re-running this script
only adds or rewrites the seed files named here; it never deletes fuzzer-found inputs.
Needs PyYAML (Debian: python3-yaml).
"""
import base64
import json
import pathlib
import re

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
corpus = root / "fuzz" / "corpus"

out = corpus / "parse_compile"
out.mkdir(parents=True, exist_ok=True)
for case in sorted((root / "integration" / "conformance" / "cases").glob("*.yaml")):
    resources = yaml.safe_load(case.read_text()).get("resources") or []
    (out / f"seed-{case.stem}.yaml").write_text(yaml.safe_dump_all(resources, sort_keys=False))
    (out / f"seed-{case.stem}.json").write_text(json.dumps(resources, indent=1) + "\n")
for stage in sorted((root / "integration" / "sandbox" / "stages").glob("*.yaml")):
    (out / f"seed-stage-{stage.name}").write_text(stage.read_text())

out = corpus / "peer_identity"
out.mkdir(parents=True, exist_ok=True)
for pem in sorted((root / "filter" / "src" / "wasm" / "testdata").glob("*.pem")):
    body = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem.read_text(), re.S)
    (out / f"seed-{pem.stem}.der").write_bytes(base64.b64decode("".join(body.group(1).split())))
