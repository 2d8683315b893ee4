"""AWS clients for `dagsmith deploy` (CloudFormation, the S3 store): each call bounded by the
whole-request deadline of backends/remote.py, and every way an endpoint can fail to give an AWS
answer (unreachable, stalled, an HTML page, garbage) one error, AwsUnavailable, with a message
that says so, instead of botocore's exception of the day (EndpointConnectionError,
ReadTimeoutError, ResponseParserError, or a KeyError from its parser on an HTML page).

botocore's own timeouts bound one socket read, like urllib's, so the whole call runs in a worker
thread the command stops waiting for at the deadline (a stalled call cannot be interrupted from
outside; its thread is a daemon, and the command ends right after it reports the error).
"""

from __future__ import annotations

import threading

from ..errors import UsageError
from .remote import TIMEOUT_ENV, request_timeout, short


class AwsUnavailable(Exception):
    """No AWS answer: unreachable, stalled past the deadline, or not an AWS answer at all.
    `sent`: the request may have reached AWS (and been acted on)."""

    def __init__(self, message: str, *, sent: bool):
        self.sent = sent
        super().__init__(message)


def client(service: str, session=None):
    """A boto3 client of `service` whose every call is bounded (see the module)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise UsageError(f"talking to AWS ({service}) needs boto3: pip install 'dagsmith[aws]'") from None
    seconds = request_timeout()
    config = Config(connect_timeout=seconds, read_timeout=seconds, retries={"mode": "standard", "total_max_attempts": 3})
    make = session.client if session else boto3.client  # boto3's default session: its models loaded once
    return Bounded(make(service, config=config), service, seconds)


class Bounded:
    """A boto3 client whose API calls end within the deadline, raising AwsUnavailable for
    anything but an answer from AWS; an AWS error answer stays a ClientError (see `message`)."""

    def __init__(self, real, service: str, seconds: float):
        self.real, self.service, self.seconds = real, service, seconds

    def __getattr__(self, name: str):
        attribute = getattr(self.real, name)
        if name.startswith("_") or name in ("meta", "exceptions") or not callable(attribute):
            return attribute
        return lambda *args, **kwargs: self._call(name, attribute, args, kwargs)

    def _call(self, name: str, method, args, kwargs):
        outcome: dict = {}

        def run():
            try:
                outcome["value"] = method(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 (handed to the caller's thread)
                outcome["error"] = exc

        worker = threading.Thread(target=run, name=f"dagsmith-aws-{name}", daemon=True)
        worker.start()
        worker.join(self.seconds)
        where = f"AWS {self.service} at {self.real.meta.endpoint_url}"
        if worker.is_alive():
            raise AwsUnavailable(f"{where} gave no complete answer to {name} within {self.seconds:g}s (${TIMEOUT_ENV})", sent=True)
        error = outcome.get("error")
        if error is None:
            return outcome["value"]
        from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ParamValidationError

        if isinstance(error, (ClientError, ParamValidationError)) or not isinstance(error, Exception):
            raise error  # AWS's own answer; or ours to fix (a bug: reported as one)
        if isinstance(error, (EndpointConnectionError, ConnectTimeoutError)):
            raise AwsUnavailable(f"cannot reach {where}: {short(str(error))}", sent=False) from None
        from botocore.exceptions import BotoCoreError

        if isinstance(error, BotoCoreError):  # a read timeout, a dropped connection, a proxy error
            raise AwsUnavailable(f"no answer from {where} to {name}: {short(str(error))}", sent=True) from None
        # botocore's parser on what is not an AWS answer (an HTML login page, garbage): a
        # ResponseParserError, or whatever its parser trips on (KeyError on an HTML page)
        from botocore.parsers import ResponseParserError

        detail = f": {short(str(error))[:200]}" if isinstance(error, ResponseParserError) else ""
        raise AwsUnavailable(f"{where} did not give an AWS answer to {name} (a proxy or login page? check the endpoint "
                             f"and the network){detail}", sent=True) from None


def message(error) -> str:
    """A ClientError's message for a user: AWS's own, or, when the endpoint answered something
    that is not an AWS error (an HTML page: code 'Unknown' or the bare status), say that."""
    response = getattr(error, "response", None) or {}
    details = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    code, text = str(details.get("Code") or ""), str(details.get("Message") or "")
    if not code or code == "Unknown" or code == str(status):
        return f"the endpoint answered HTTP {status or '?'} without an AWS error (a proxy or login page?): {short(text or str(error))}"
    return short(f"{code}: {text}" if text else code)


def put_text(uri: str, text: str, what: str) -> None:
    """Put `text` at the s3:// `uri` (the IR for the pods), before anything else changes: any
    failure is a UsageError (exit 2, nothing deployed)."""
    from ..runtime.s3 import split_uri
    from ..runtime.store import StoreError

    s3 = client("s3")  # without boto3: a UsageError saying what to install
    from botocore.exceptions import ClientError

    try:
        bucket, key = split_uri(uri)
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"))
    except StoreError as exc:
        raise UsageError(f"cannot put {what} at {uri}, nothing deployed: {exc}") from None
    except ClientError as exc:
        raise UsageError(f"cannot put {what} at {uri}, nothing deployed: {message(exc)}") from None
    except AwsUnavailable as exc:
        raise UsageError(f"cannot put {what} at {uri}, nothing deployed: {exc}") from None
