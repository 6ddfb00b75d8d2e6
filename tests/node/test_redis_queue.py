"""Queueing through the running Redis, as in production."""

from __future__ import annotations

from pathlib import Path

from node.db.audit import events
from node.scu import send_datasets
from node.service import Node
from node.settings import Destination, configure
from tests.helpers import make_dx, queued_messages


def test_store_queues_task_in_redis(node_config, redis_url: str, cr_chest: Path) -> None:
    settings = configure(broker_url=redis_url)
    node = Node(settings)
    host, port = node.start()
    try:
        ds = make_dx(cr_chest)
        assert [r.status for r in send_datasets([ds], Destination("CXRNODE", host, port), "M")] == [0]
        messages = queued_messages(settings)
        assert [m["kwargs"]["sop_instance_uid"] for m in messages] == [ds.SOPInstanceUID]
        assert messages[0]["task"] == "cxr_node.analyze_instance"
        assert Path(messages[0]["kwargs"]["path"]).is_file()
        assert [e.outcome for e in events(kind="job.queued")] == ["success"]
    finally:
        node.stop()
