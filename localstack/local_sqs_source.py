"""The local substitute for a Lambda SQS event source mapping.

moto's event source mapping calls moto's own Lambda backend, which runs no
code here. So the local stack plays the mapping itself, as AWS does it:
long-poll the queue, hand up to `batch_size` messages to the function as one
SQS event through the Lambda Invoke API (the gateway, so the workspace
binary runs), then delete the messages the function did not report in
`batchItemFailures` (`ReportBatchItemFailures`). A message whose invocation
failed, or that the function reported, is left to become visible again after
the queue's visibility timeout; the queue's redrive policy moves it to the
dead-letter queue after `maxReceiveCount` receives.

The mappings come from `event-sources.json`, written by localstack/deploy.py
from the template's `Events: {Type: SQS}`. Stdlib only: SQS is spoken as
JSON (X-Amz-Target AmazonSQS.*) to moto.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable


class SqsSource:
    def __init__(self, mapping: dict, moto: tuple[str, int], invoke: Callable[[str, bytes], tuple[int, bytes]],
                 region: str = "us-east-1"):
        self.queue_url = mapping["queue_url"]
        self.function = mapping["function"]
        self.batch_size = int(mapping.get("batch_size", 10))
        self.partial = bool(mapping.get("report_batch_item_failures", False))
        self.moto = moto
        self.invoke = invoke
        self.region = region
        self.stop = threading.Event()

    def _sqs(self, op: str, body: dict) -> dict:
        conn = http.client.HTTPConnection(*self.moto, timeout=30)
        try:
            conn.request("POST", "/", json.dumps(body).encode(), {
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": f"AmazonSQS.{op}",
                "Authorization": f"AWS4-HMAC-SHA256 Credential=test/20260101/{self.region}/sqs/aws4_request, "
                                 "SignedHeaders=host, Signature=0",
            })
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"SQS {op}: {resp.status} {data[:300]!r}")
            return json.loads(data or b"{}")
        finally:
            conn.close()

    def _arn(self) -> str:
        path = urllib.parse.urlparse(self.queue_url).path.strip("/").split("/")
        return f"arn:aws:sqs:{self.region}:{path[0]}:{path[1]}"

    def poll_once(self, wait_seconds: int = 1) -> int:
        out = self._sqs("ReceiveMessage", {"QueueUrl": self.queue_url, "MaxNumberOfMessages": self.batch_size,
                                           "WaitTimeSeconds": wait_seconds,
                                           "MessageSystemAttributeNames": ["All"]})
        messages = out.get("Messages") or []
        if not messages:
            return 0
        event = {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes") or {}, "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""),
            "eventSource": "aws:sqs", "eventSourceARN": self._arn(), "awsRegion": self.region,
        } for m in messages]}
        status, body = self.invoke(self.function, json.dumps(event).encode())
        if status != 200:
            sys.stderr.write(f"[sqs-source] {self.function} failed ({status}); {len(messages)} messages left to retry\n")
            return len(messages)
        failed: set[str] = set()
        if self.partial:
            try:
                failed = {f["itemIdentifier"] for f in json.loads(body or b"{}").get("batchItemFailures") or []}
            except (ValueError, AttributeError, TypeError):
                failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self._sqs("DeleteMessageBatch", {"QueueUrl": self.queue_url, "Entries": [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]})
        return len(messages)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.poll_once()
            except Exception as e:  # noqa: BLE001 -- keep polling; say why
                sys.stderr.write(f"[sqs-source] {self.queue_url}: {e}\n")
                time.sleep(1)


def start_all(path: Path, moto: tuple[str, int], invoke, region: str, rescan_seconds: float = 2.0) -> threading.Thread:
    """Plays every mapping in `path`, which deploy.py may write after the
    gateway has started: the file is read again every `rescan_seconds`, and a
    mapping not yet played gets its poller."""
    started: dict[tuple[str, str], SqsSource] = {}

    def supervise() -> None:
        while True:
            try:
                mappings = json.loads(path.read_text())
            except (OSError, ValueError):
                mappings = []
            for m in mappings:
                key = (m["queue_url"], m["function"])
                if key not in started:
                    src = SqsSource(m, moto, invoke, region)
                    started[key] = src
                    threading.Thread(target=src.run, name=f"sqs-source-{src.function}", daemon=True).start()
                    sys.stderr.write(f"[sqs-source] {src.queue_url} -> Lambda {src.function} (batch {src.batch_size})\n")
            time.sleep(rescan_seconds)

    t = threading.Thread(target=supervise, name="sqs-sources", daemon=True)
    t.start()
    return t
