"""Ack-link tokens as a replaying attacker would spell them."""

from __future__ import annotations


def respell(token: str) -> str:
    """The same token with the spare low bits of its signature's last character flipped:
    base64 decodes both spellings to the same bytes (32 bytes take 43 characters, and the
    last one carries 2 bits that nothing reads)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    return token[:-1] + alphabet[last ^ 1]
