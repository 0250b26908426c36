"""Client for the question-bank search service: import a bank, look questions up, from Python or the CLI.

It talks to the Flow's gateway only (gRPC, HTTP or WebSocket by URL), never to Milvus directly.
"""

from qbank_client.api import QbankClient, QuestionHit
from qbank_client.bank import BadRow, Question, read_bank
from qbank_client.transport import ServerError

__all__ = ["BadRow", "QbankClient", "Question", "QuestionHit", "ServerError", "read_bank"]
