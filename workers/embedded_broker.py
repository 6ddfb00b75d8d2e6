"""The embedded broker: kombu's filesystem transport, each message written whole before a
consumer can see it.

kombu's own ``_put`` creates the message file under its final name and then writes it, so a
worker polling the folder can move and read it half-written: the worker dies on a JSON
error and the study waits for the sweep. Here the message is written under a name that
``_get`` never picks up (it takes only ``<time>_<uuid>.<queue>.msg``) and renamed into
place, which is atomic within one folder (POSIX rename).
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

TRANSPORT = "workers.embedded_broker:Transport"


class Channel(filesystem.Channel):
    # kombu names this argument "message" in its base class and "payload" here.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
