"""A run store's location, written one way for everyone who joins a key to it (the backends: the
IR's location, Step Functions' StorePrefix; the runtime: every artifact): `s3://bucket/prefix`
with no trailing `/`, since `<store>/<key>` with `s3://b/p/` names `p//ir/...`, another S3 key
than `p/ir/...`. A folder is a path (pathlib reads `a/` as `a`). Imports nothing of dagsmith, so
the spec check, the compiler, the backends and the runtime may all use it."""

from __future__ import annotations


def store_uri(text: str) -> str:
    """`text` as the one spelling of the store it names; ValueError for an URI with no bucket or
    an empty segment in its prefix (`s3://b//p`, `s3://b/a//b`: S3 keeps `a//b` a different key
    from `a/b`, and a reader that drops empty segments would read another object)."""
    scheme, separator, rest = text.partition("://")
    if not separator:
        return text
    trimmed = rest.rstrip("/")
    bucket, _, prefix = trimmed.partition("/")
    if not bucket:
        raise ValueError(f"store {text!r} names no bucket: expected {scheme}://bucket/prefix")
    if "" in prefix.split("/") and prefix:
        raise ValueError(f"store {text!r} has an empty segment ('//') in its prefix: write {scheme}://{bucket}/"
                         f"{'/'.join(p for p in prefix.split('/') if p)}")
    return f"{scheme}://{trimmed}"
