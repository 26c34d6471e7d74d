"""Test helpers shipped to users: build a gate without a model, in a temporary store.

:class:`HashingEmbedder` is a deterministic bag-of-words embedder (hashed word and character
trigram counts): messages that share words are similar, others are not. It needs no model, so
unit tests of code built on the gate run in milliseconds. :func:`make_gate` puts it together
with a real embedded Chroma in a directory of your choice; its settings are its arguments alone
(no ``GATEKEEPER_*`` variable or ``.env``), and its gate failures raise unless told otherwise.
README.md, "Testing your app", shows a pytest fixture.
"""

from gatekeeper.testing.fakes import HashingEmbedder, make_gate, tiny_catalog
from gatekeeper.testing.servers import LoopbackServer, RecordingUpstream

__all__ = ["HashingEmbedder", "LoopbackServer", "RecordingUpstream", "make_gate", "tiny_catalog"]
