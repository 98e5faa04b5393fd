"""Testing tools for trio networking code.

:func:`check_message_channel` is a conformance suite for message channels.
"""

from ._check_channel import check_message_channel as check_message_channel

__all__ = ["check_message_channel"]
