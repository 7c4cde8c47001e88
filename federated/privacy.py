"""The privacy rule of the federated runs, enforced on every client reply the server receives.

A client may send model weights (named like the model's state dict), counts, its partition id,
local ids and similarities. Never images, per-image features or logits, or labels of images it
has not acquired: any record or field outside the list below is a violation, and the run stops.
"""
from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

ALLOWED_METRICS = {"num-examples", "partition-id"}  # counts and who is speaking
ALLOWED_QUERY_FIELDS = {"partition-id", "ids", "similarities", "top-k"}  # local ids, their similarities


class PrivacyViolation(RuntimeError):
    """A client reply carried something the privacy rule does not allow."""


def reply_problems(content: RecordDict, weight_shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """What in a reply's content breaks the rule ([] when nothing): `weight_shapes` names the model's
    state dict."""
    problems = []
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            problems += _weights_problems(name, record, weight_shapes)
        elif isinstance(record, MetricRecord):
            extra = set(record) - ALLOWED_METRICS
            problems += [f"metric record {name!r} holds {sorted(extra)}"] if extra else []
        elif isinstance(record, ConfigRecord):
            problems += _query_problems(name, record)
        else:
            problems.append(f"record {name!r} of type {type(record).__name__}")
    return problems


def _weights_problems(name: str, record: ArrayRecord, weight_shapes: dict[str, tuple[int, ...]]) -> list[str]:
    if name != "arrays":
        return [f"array record {name!r} (only the model weights, 'arrays', may be sent)"]
    problems = [f"array {key!r} is not a model weight" for key in record if key not in weight_shapes]
    problems += [f"weight {key!r} has shape {tuple(array.shape)}, not {weight_shapes[key]}"
                 for key, array in record.items() if key in weight_shapes and tuple(array.shape) != weight_shapes[key]]
    return problems


def _query_problems(name: str, record: ConfigRecord) -> list[str]:
    if name != "reply":
        return [f"config record {name!r}"]
    problems = [f"query reply field {key!r}" for key in record if key not in ALLOWED_QUERY_FIELDS]
    ids, similarities = record.get("ids", []), record.get("similarities")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        problems.append("ids are not a list of integers")
    if similarities is not None and (not isinstance(similarities, list) or len(similarities) != len(ids)):
        problems.append("similarities do not pair with the ids")
    return problems


def _sender(reply: Message) -> str:
    try:
        return str(reply.metadata.src_node_id)
    except (RuntimeError, AttributeError):  # a message that was never sent has no metadata yet
        return "?"


class Audit:
    """Checks replies against the rule and counts them (the count goes into the metrics records)."""

    def __init__(self, weight_shapes: dict[str, tuple[int, ...]]) -> None:
        self.weight_shapes = weight_shapes
        self.checked = 0

    def check(self, replies: Iterable[Message]) -> list[Message]:
        replies = list(replies)
        for reply in replies:  # a client's error reply carries no content, only Flower's error
            problems = [] if reply.has_error() else reply_problems(reply.content, self.weight_shapes)
            if problems:
                raise PrivacyViolation(f"client node {_sender(reply)} broke the privacy rule: " + "; ".join(problems))
            self.checked += 1
        return replies
