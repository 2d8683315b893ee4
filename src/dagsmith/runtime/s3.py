"""S3: the artifact store for orchestrated runs, and s3:// data sources (boto3)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .store import MANIFEST, STORES, Staging, Store, StoreError, dumps


def split_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b')."""
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StoreError(f"invalid S3 URI {uri!r}: expected s3://bucket/prefix")
    return bucket, prefix


def client():
    try:
        import boto3
    except ImportError:
        raise StoreError("s3:// needs boto3: pip install 'dagsmith[aws]'") from None
    return boto3.client("s3")


def list_objects(uri: str) -> list[dict]:
    """Every object under an s3:// prefix: [{'Key', 'Size', 'ETag'}], sorted by key."""
    bucket, prefix = split_uri(uri)
    paginator = client().get_paginator("list_objects_v2")
    out = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out.append({"Key": obj["Key"], "Size": obj["Size"], "ETag": obj.get("ETag", "")})
    return sorted(out, key=lambda o: o["Key"])


def download(bucket: str, key: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    client().download_file(bucket, key, str(target))
    return target


class S3Store(Store):
    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.bucket, prefix = split_uri(self.uri)
        self.prefix = prefix.strip("/")
        self.s3 = client()
        self.cache = Path(tempfile.mkdtemp(prefix="dagsmith-s3-"))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _publish(self, staging: Staging, manifest: dict, exclusive: bool) -> None:
        manifest_key = f"{staging.key}/{MANIFEST}"
        # Exclusive: the files of a published location are not uploaded over (its writer holds a
        # claim to it: see registry.claim_version), and the manifest is a create-only PUT.
        if exclusive and self.read_versioned(manifest_key)[1] is not None:
            raise self._published_already(staging)
        for name, entry in manifest["files"].items():
            self.s3.upload_file(str(staging.dir / name), self.bucket, self._key(entry["key"]))
        # The manifest goes last: until it exists, readers see no outputs at all.
        if exclusive:
            if not self.write_if(manifest_key, manifest, None):
                raise self._published_already(staging)
        else:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(manifest_key), Body=dumps(manifest))
        staging.discard()

    def fetch(self, key: str) -> Path:
        target = self.cache / key
        if not target.exists():
            download(self.bucket, self._key(key), target)
        return target

    def read_json(self, key: str):
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def write_json(self, key: str, data) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=dumps(data))  # a PUT is atomic

    def read_versioned(self, key: str) -> tuple[object, str | None]:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.s3.exceptions.NoSuchKey:
            return None, None
        return json.loads(response["Body"].read()), response["ETag"]

    def write_if(self, key: str, data, version: str | None) -> bool:
        """S3's conditional write: `If-Match: <ETag>` replaces only that version, `If-None-Match: *`
        creates only a missing object; a lost race answers 412 PreconditionFailed, or 409
        ConditionalRequestConflict while another conditional write of the key is in flight
        (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html)."""
        from botocore.exceptions import ClientError

        condition = {"IfMatch": version} if version is not None else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=dumps(data), **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise
        return True

    def exists(self, key: str) -> bool:
        return bool(list_objects(f"s3://{self.bucket}/{self._key(key)}"))

    def list(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        return [o["Key"][strip:] for o in list_objects(f"s3://{self.bucket}/{self._key(prefix)}")]


STORES["s3"] = S3Store
