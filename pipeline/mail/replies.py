"""What a server answered, and whose fault a refusal is.

A permanent refusal only says something about the recipient when it answers the
recipient: RCPT TO, or the message itself (DATA). The same code in reply to MAIL
FROM is about us: our sender address, our relay account, our reputation. Mixing
the two marked a whole list bounced because a relay disliked our sender.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# The SMTP command a reply answers. DATA covers both the DATA command and the end of
# the message's content (the final reply).
MAIL, RCPT, DATA = "MAIL", "RCPT", "DATA"

# RFC 3463 enhanced status codes that say the recipient's own address is wrong or gone,
# so mailing it again is pointless. Only these, and only in reply to RCPT or DATA, mark
# a subscriber bounced; every other permanent refusal fails that one delivery.
# Left out on purpose: X.1.0 "other address status" (Postfix and others use it for our
# *sender* address, even at RCPT when they delay restrictions), X.1.7 / X.1.8 (our
# sender's address), X.1.4 (ambiguous), X.2.2 (mailbox full: usually passes) and X.7.x
# (policy: the relay's decision about us or the message, not about the address).
BAD_MAILBOX_STATUSES = frozenset(
    {
        "5.1.1",  # bad destination mailbox address: no such user
        "5.1.2",  # bad destination system address: no such domain
        "5.1.3",  # bad destination mailbox address syntax
        "5.1.6",  # destination mailbox has moved, no forwarding address
        "5.1.10",  # recipient address has null MX (RFC 7505, registered per RFC 5248)
        "5.2.1",  # mailbox disabled, not accepting messages
    }
)

_ENHANCED = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})\b")


class Reply(NamedTuple):
    """An SMTP reply (or the outbox's equivalent). A tuple: one is made per message."""

    code: int
    text: str
    stage: str = DATA  # MAIL, RCPT or DATA: the command this reply answers

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code, e.g. '5.1.1', when the server gave one."""
        match = _ENHANCED.match(self.text.encode("ascii", "replace"))
        return b".".join(match.groups()).decode() if match else None

    @property
    def sender_refused(self) -> bool:
        """A permanent refusal of MAIL FROM: our sender or relay is at fault, not the list."""
        return self.permanent and self.stage == MAIL

    @property
    def bad_mailbox(self) -> bool:
        """The recipient's own address is wrong or gone (see ``BAD_MAILBOX_STATUSES``):
        stop mailing it."""
        return self.permanent and self.stage in (RCPT, DATA) and self.enhanced in BAD_MAILBOX_STATUSES

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()
