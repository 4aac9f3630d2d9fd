"""Method-to-scope tables, checked against the proto service so none is forgotten."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.descriptor import ServiceDescriptor


def method_scopes(service: ServiceDescriptor, by_method: Mapping[str, str]) -> dict[str, str]:
    """Full method names ("/pkg.Service/Method") to scopes; every RPC must be listed."""
    names = {m.name for m in service.methods}
    missing = sorted(names - set(by_method))
    unknown = sorted(set(by_method) - names)
    if missing or unknown:
        raise ValueError(
            f"scope table of {service.full_name} is out of date: "
            f"missing {missing}, unknown {unknown}"
        )
    return {f"/{service.full_name}/{name}": scope for name, scope in by_method.items()}
