"""How step names become each backend's identifiers, and the collisions that forbids.

A name longer than a backend allows is truncated and given a hash suffix (documented in
docs/spec.md), so it stays unique; two names that differ only in what a backend cannot spell
(case, '_' vs '-') would collide and are a spec error, never a silent overwrite.
"""

from __future__ import annotations

import hashlib
import re


def _truncate(name: str, sanitized: str, limit: int, sep: str) -> str:
    if len(sanitized) <= limit:
        return sanitized
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return sanitized[: limit - len(digest) - 1].rstrip(sep) + sep + digest


def k8s_name(name: str, limit: int = 63) -> str:
    """DNS-1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric."""
    sanitized = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "x"
    return _truncate(name, sanitized, limit, "-")


def airflow_id(name: str, limit: int = 250) -> str:
    """Airflow task/dag id: ^[A-Za-z0-9_.-]+$, at most 250 characters (dots avoided: task groups)."""
    sanitized = re.sub(r"[^A-Za-z0-9_-]+", "_", name) or "x"
    return _truncate(name, sanitized, limit, "_")


def sfn_state_name(name: str, limit: int = 80) -> str:
    """Step Functions state name: at most 80 characters, no whitespace or control characters."""
    sanitized = re.sub(r"[\s\"#%*<>?{}\[\]\\^`|~$&,;:/\x00-\x1f\x7f]+", "_", name) or "x"
    return _truncate(name, sanitized, limit, "_")


BACKEND_IDENTIFIERS = {
    "Kubernetes/Argo": k8s_name,
    "Airflow": airflow_id,
    "Step Functions": sfn_state_name,
}


def collisions(names: list[str]) -> list[tuple[str, str, str, str]]:
    """(backend, identifier, first name, second name) for every pair that would collide."""
    out = []
    for backend, convert in BACKEND_IDENTIFIERS.items():
        seen: dict[str, str] = {}
        for name in names:
            ident = convert(name)
            if ident in seen and seen[ident] != name:
                out.append((backend, ident, seen[ident], name))
            seen.setdefault(ident, name)
    return out
