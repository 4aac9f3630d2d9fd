"""JSON schemas for kubeconform, offline.

Core kinds: the Kubernetes OpenAPI schemas shipped in the `kubernetes-validate` wheel (a
locked dev dependency) use a shared `_definitions.json` with root-relative `$ref`s that
kubeconform cannot follow. `core_schema_dir()` rewrites every top-level kind into a
standalone strict schema (only the definitions it reaches, under its own `$defs`) in a
git-ignored folder, named the way kubeconform looks them up:
`<kind>-<group>-<version>.json`.

Custom resources: `python -m tests.support.kube_schemas crd CRD.yaml... --out deploy/schemas/crd`
turns CustomResourceDefinitions into strict schemas at `<group>/<kind>_<version>.json`
(kubeconform's `{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.33.0"
CORE_CACHE = ROOT / ".tools" / "k8s-schemas"
CRD_DIR = ROOT / "deploy" / "schemas" / "crd"

# The per-kind files point into `/api/_definitions.json`; definitions point at each other
# with `#/$defs/...` inside that file. Both become `#/$defs/...` of the standalone schema.
_REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(.+)$")

JSON = dict[str, Any]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out: JSON = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                match = _REF.match(value)
                if match is None:
                    raise ValueError(f"unexpected $ref {value!r}")
                out[key] = f"#/$defs/{match.group(1)}"
            else:
                out[key] = _rewrite_refs(value)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


def _standalone(schema: JSON, definitions: JSON) -> JSON:
    """The schema with every definition it reaches copied under its own `$defs`."""
    needed: dict[str, JSON] = {}
    pending = list(_refs(schema))
    while pending:
        ref = pending.pop()
        match = _REF.match(ref)
        if match is None:
            raise ValueError(f"unexpected $ref {ref!r}")
        name = match.group(1)
        if name in needed:
            continue
        needed[name] = definitions[name]
        pending.extend(_refs(definitions[name]))
    out: JSON = _rewrite_refs(schema)
    out["$schema"] = "http://json-schema.org/draft-07/schema#"
    out["$defs"] = {name: _rewrite_refs(body) for name, body in sorted(needed.items())}
    return out


def kind_file_name(group: str, version: str, kind: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` for a built-in kind."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def _package_schema_dir(version: str) -> Path:
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    folder = Path(str(base)) / f"v{version}-local-strict"
    if not folder.is_dir():
        raise FileNotFoundError(f"kubernetes-validate ships no schemas for {version}: {folder}")
    return folder


def core_schema_dir(version: str = KUBERNETES_VERSION) -> Path:
    """The folder of standalone strict core schemas, generated once per version.

    kubeconform's location template for it: `<dir>/{{ .ResourceKind }}{{ .KindSuffix }}.json`.
    """
    target = CORE_CACHE / f"v{version}-standalone-strict"
    if (target / ".complete").is_file():
        return target
    source = _package_schema_dir(version)
    definitions: JSON = json.loads((source / "_definitions.json").read_text())["$defs"]
    CORE_CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=CORE_CACHE, prefix=".build-"))
    try:
        written = 0
        for body in definitions.values():
            for gvk in body.get("x-kubernetes-group-version-kind", []):
                name = kind_file_name(gvk["group"], gvk["version"], gvk["kind"])
                path = source / name
                if not path.is_file():
                    continue  # list and option kinds the package has no file for
                schema = _standalone(json.loads(path.read_text()), definitions)
                (work / name).write_text(json.dumps(schema))
                written += 1
        if written < 50:
            raise RuntimeError(f"only {written} core schemas generated from {source}")
        (work / ".complete").write_text(f"{written}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return target


def _strict(node: Any) -> Any:
    """additionalProperties: false on every object that lists its properties.

    Objects that keep unknown fields on purpose (`x-kubernetes-preserve-unknown-fields`) or
    declare their own `additionalProperties` are left as they are.
    """
    if isinstance(node, dict):
        out = {key: _strict(value) for key, value in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields", False)
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


def crd_schemas(crd: JSON) -> dict[str, JSON]:
    """`<group>/<kind>_<version>.json` → strict JSON schema, for each served version."""
    spec = crd["spec"]
    group: str = spec["group"]
    kind: str = spec["names"]["kind"]
    out: dict[str, JSON] = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
        props["kind"] = {"type": "string", "enum": [kind]}
        # kubeconform validates metadata against the core kinds; here it stays an object.
        props["metadata"] = {"type": "object"}
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "spec"})
        strict = _strict(schema)
        strict["$schema"] = "http://json-schema.org/draft-07/schema#"
        out[f"{group}/{kind.lower()}_{version['name']}.json"] = strict
    return out


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.kube_schemas")
    sub = parser.add_subparsers(dest="command", required=True)
    core = sub.add_parser("core", help="generate the standalone core schemas; print the folder")
    core.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    crd = sub.add_parser("crd", help="convert CustomResourceDefinition YAML files")
    crd.add_argument("files", nargs="+", type=Path)
    crd.add_argument("--out", type=Path, default=CRD_DIR)
    args = parser.parse_args()
    if args.command == "core":
        print(core_schema_dir(args.kubernetes_version))
        return
    for file in args.files:
        for doc in yaml.safe_load_all(file.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            for name, schema in crd_schemas(doc).items():
                path = args.out / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(path)


if __name__ == "__main__":
    _main()
