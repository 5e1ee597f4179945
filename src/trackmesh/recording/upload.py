"""Recorded files to S3-compatible storage, never losing one. A driver: a thread with boto3.

The local recording folder is the spool: a file is uploaded once it is complete (or, found at
start, once a crash cut it), as the object ``<prefix>/<app>/<room>/<session>/<peer>/<file>`` (the
playable file itself) followed by its sidecar JSON. Rules:

- **In parts** (S3 multipart upload, :data:`PART_SIZE` each), every request retried with
  exponential backoff and jitter (:func:`backoff`) until the store acknowledges it, however long
  the store is down: each request is tried up to 5 times at once, then the upload waits (backoff
  growing while nothing gets through, up to a minute) and starts again from what the store has.
  ``recording_upload_failures`` counts failed requests, ``recording_upload_retries`` uploads that
  had to wait: alarm on their rate (and on ``recording_upload_queue``).
- **Resumable.** The upload's id and the ETags of the parts already stored are kept beside the
  file (``<file>.upload.json``, written atomically after each part); after a restart the upload
  continues from there (``ListParts`` says what the store has; a vanished upload starts over).
- **Delete only what is confirmed.** The local media file is removed only after
  ``CompleteMultipartUpload`` succeeded and ``HeadObject`` reports the object with the file's size;
  the sidecar stays, marked ``uploaded`` with the object's key (so ``/api/record/list`` still
  lists it).

Custom endpoints (MinIO, Ceph, moto...) get path-style addressing; region and credentials come
from boto3's usual chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, profiles...).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

from .layout import mark_interrupted, read_sidecar, write_sidecar

__all__ = ["PART_SIZE", "S3Target", "Uploader", "backoff", "parse_s3_url"]

log = logging.getLogger("trackmesh.recording")

#: Bytes per part (S3's minimum is 5 MiB for every part but the last).
PART_SIZE: Final = 8 * 1024 * 1024
#: Tries of one request before the upload as a whole waits and starts again from what is stored.
_REQUEST_TRIES: Final = 5
_STATE: Final = ".upload.json"
_SIDE: Final = ".json"

COUNTERS: Final = (
    "recording_upload_queue",
    "recording_uploads",
    "recording_upload_bytes",
    "recording_upload_failures",
    "recording_upload_retries",
)


class S3Error(ValueError):
    """A ``--record-s3`` value that cannot be used."""


@dataclass(frozen=True)
class S3Target:
    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str | None = None


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix")."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise S3Error(f"{url!r} is not s3://bucket[/prefix]")
    return parsed.netloc, parsed.path.strip("/")


def backoff(attempt: int, rng: random.Random, base: float = 0.5, cap: float = 60.0) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): exponential with full jitter (capped)."""
    return rng.uniform(base / 2, min(cap, base * 2 ** (attempt - 1)))


def _client(target: S3Target) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"} if target.endpoint else {},
        # No retries inside botocore: this module's loop retries every request (its backoff, its
        # counters), resuming the upload from what the store confirmed.
        retries={"total_max_attempts": 1, "mode": "standard"},
        # Checksums only where S3 requires them: several S3-compatible stores refuse the newer
        # aws-chunked uploads with trailing checksums. Each part's integrity is still checked by
        # its Content-MD5-free ETag and the object's size before the local file is deleted.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=5,
        read_timeout=30,
    )
    return boto3.client("s3", endpoint_url=target.endpoint, region_name=target.region, config=config)


class Uploader:
    """One thread that uploads what :meth:`submit` hands it, oldest first, each until it is done."""

    def __init__(
        self,
        root: Path,
        target: S3Target,
        counters: dict[str, int],
        client: Any = None,
        part_size: int = PART_SIZE,
        seed: int | None = None,
        retry_base: float = 0.5,
    ) -> None:
        """``retry_base``: the first retry waits up to this long, doubling (with jitter) to a minute."""
        self.retry_base = retry_base
        self.root = root
        self.target = target
        self.counters = counters
        for name in COUNTERS:
            counters.setdefault(name, 0)
        self.part_size = part_size
        self._client = client
        self._rng = random.Random(seed)
        self._pending: list[Path] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._progress = 0  # requests the store acknowledged (parts, creates, completes)

    # ---- any thread ------------------------------------------------------------------------------

    def submit(self, media: Path) -> None:
        with self._cond:
            if media not in self._pending:
                self._pending.append(media)
                self.counters["recording_upload_queue"] = len(self._pending)
            self._cond.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trackmesh-upload", daemon=True)
            self._thread.start()

    def resume_pending(self) -> int:
        """At start: every complete or crash-cut file still in the spool is (re)submitted; files a
        crash cut (sidecar still ``recording``) are marked ``interrupted`` first. Returns how many."""
        found = 0
        if not self.root.is_dir():
            return 0
        mark_interrupted(self.root)
        for side in sorted(self.root.rglob("*" + _SIDE)):
            if side.name.endswith(_STATE):
                continue
            media = side.with_name(side.name[: -len(_SIDE)])
            info = read_sidecar(side)
            if info is None or not media.exists() or info.get("uploaded"):
                continue
            self.submit(media)
            found += 1
        return found

    def stop(self, timeout: float) -> None:
        """Stop after the current request; what is left is resumed at the next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def idle(self) -> bool:
        with self._cond:
            return not self._pending

    # ---- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                media = self._pending[0]
            progress = self._progress
            try:
                self._upload(media)
            except Exception as exc:
                # Backoff grows while nothing gets through; any acknowledged request starts it over.
                attempt = 1 if self._progress != progress else attempt + 1
                self.counters["recording_upload_retries"] += 1
                delay = backoff(attempt, self._rng, base=self.retry_base)
                if attempt <= 3 or attempt % 20 == 0:
                    log.warning(
                        "recording upload failed; retrying",
                        extra={"fields": {"file": str(media), "attempt": attempt, "retry_in": round(delay, 2),
                                          "error": str(exc)[:300]}},
                    )  # fmt: skip
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, timeout=delay)
                continue
            attempt = 0
            with self._cond:
                if self._pending and self._pending[0] == media:
                    self._pending.pop(0)
                self.counters["recording_upload_queue"] = len(self._pending)

    def _call(self, op: str, **params: Any) -> Any:
        """One S3 request, retried at once with a short backoff while the failure is transient (a
        dropped connection, a timeout, 5xx, 429, 408); the caller's loop retries beyond that."""
        from botocore.exceptions import ClientError

        s3 = self._s3()
        for attempt in range(1, _REQUEST_TRIES + 1):
            try:
                result = getattr(s3, op)(**params)
            except ClientError as exc:
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                if 400 <= status < 500 and status not in (408, 429):
                    raise  # the store's answer (no such upload, no such key...): not worth repeating
                error: Exception = exc
            except Exception as exc:
                error = exc
            else:
                self._progress += 1
                return result
            self.counters["recording_upload_failures"] += 1
            if attempt == _REQUEST_TRIES or self._stopping:
                raise error
            with self._cond:
                self._cond.wait_for(lambda: self._stopping, timeout=backoff(attempt, self._rng, self.retry_base, 5.0))
        raise AssertionError("unreachable")

    def _object_size(self, key: str) -> int | None:
        """The object's size, None when it does not exist; other errors raise (retried later)."""
        from botocore.exceptions import ClientError

        try:
            head = self._call("head_object", Bucket=self.target.bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def _s3(self) -> Any:
        if self._client is None:
            self._client = _client(self.target)
        return self._client

    def key_of(self, media: Path) -> str:
        rel = media.relative_to(self.root).as_posix()
        return f"{self.target.prefix}/{rel}" if self.target.prefix else rel

    def _upload(self, media: Path) -> None:
        if not media.exists():
            return  # uploaded and deleted by an earlier run, or removed by hand
        s3 = self._s3()
        bucket = self.target.bucket
        key = self.key_of(media)
        size = media.stat().st_size
        state_path = media.with_name(media.name + _STATE)
        # Already there (an earlier Complete succeeded but its answer or our check was lost)?
        if self._object_size(key) != size:
            self._send_parts(s3, media, key, size, state_path)
            if self._object_size(key) != size:
                raise RuntimeError(f"s3://{bucket}/{key} does not have the file's {size} bytes")
        side = media.with_name(media.name + _SIDE)
        info = read_sidecar(side) or {}
        info.update(uploaded=True, s3_key=key, s3_bucket=bucket, size=size)
        self._call("put_object", Bucket=bucket, Key=key + _SIDE, Body=json.dumps(info, sort_keys=True).encode(),
                   ContentType="application/json")  # fmt: skip
        write_sidecar(media, info)
        media.unlink()
        state_path.unlink(missing_ok=True)
        self.counters["recording_uploads"] += 1
        log.info("recording uploaded", extra={"fields": {"key": key, "bytes": size}})

    def _send_parts(self, s3: Any, media: Path, key: str, size: int, state_path: Path) -> None:
        """Create (or resume) the multipart upload, send the parts the store lacks, complete it."""
        bucket = self.target.bucket
        state = _read_state(state_path)
        if state is not None and state.get("key") == key and state.get("size") == size:
            # Resume: keep only the parts the store confirms it has.
            try:
                listed = self._call("list_parts", Bucket=bucket, Key=key, UploadId=state["upload_id"])
            except Exception as exc:
                if "NoSuchUpload" not in str(exc):
                    raise
                state = None  # aborted or expired on the store's side: start over
            else:
                have = {str(p["PartNumber"]): p["ETag"] for p in listed.get("Parts", [])}
                state["parts"] = {n: e for n, e in state["parts"].items() if have.get(n) == e}
        if state is None or state.get("key") != key or state.get("size") != size:
            created = self._call("create_multipart_upload", Bucket=bucket, Key=key, ContentType=_content_type(media))
            state = {"key": key, "size": size, "upload_id": created["UploadId"], "parts": {}}
            _write_state(state_path, state)
        parts: dict[str, str] = state["parts"]
        count = max(1, -(-size // self.part_size))
        with media.open("rb") as f:
            for number in range(1, count + 1):
                if str(number) in parts:
                    continue
                f.seek((number - 1) * self.part_size)
                body = f.read(self.part_size)
                done = self._call(
                    "upload_part", Bucket=bucket, Key=key, UploadId=state["upload_id"], PartNumber=number, Body=body
                )
                parts[str(number)] = done["ETag"]
                _write_state(state_path, state)
                self.counters["recording_upload_bytes"] += len(body)
        listing = [{"PartNumber": int(n), "ETag": e} for n, e in sorted(parts.items(), key=lambda x: int(x[0]))]
        self._call(
            "complete_multipart_upload",
            Bucket=bucket,
            Key=key,
            UploadId=state["upload_id"],
            MultipartUpload={"Parts": listing},
        )


def _content_type(media: Path) -> str:
    return "video/mp4" if media.suffix == ".mp4" else "video/webm"


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("parts"), dict) else None


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True))
    os.replace(tmp, path)
