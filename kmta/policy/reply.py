"""An SMTP reply as the policy core sees it: code, enhanced status code, readable text."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Reply"]

# RFC 3463 enhanced status code at the start of a text line, e.g. "4.7.28".
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?=[\s,;:\]]|\.(?:\s|$)|$)\s*")
# A basic reply code repeated at the start of a line of a raw multi-line reply ("421-", "554 ").
_CODE = re.compile(r"^([2-5]\d\d)(?:[ -]|$)")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply. ``internal`` marks replies kmta made up itself (timeouts, refused
    connections, DNS failures): they must never match a provider's reply patterns."""

    code: int | None
    enhanced_code: str | None
    text: str
    internal: bool = False

    def line(self) -> str:
        """``"<code> <enhanced> <text>"`` with missing parts left out; what patterns search."""
        parts = [
            str(self.code) if self.code is not None else "",
            self.enhanced_code or "",
            self.text,
        ]
        return " ".join(p for p in parts if p)

    @property
    def temporary(self) -> bool:
        """True for 4xx replies and for internal replies without a code."""
        if self.code is None:
            return True
        return 400 <= self.code < 500

    @classmethod
    def parse(cls, code: int | None, message: str, internal: bool = False) -> Reply:
        """Split an enhanced status code off the start of ``message``.

        ``message`` may be a multi-line reply joined by ``"\\n"`` (as aiosmtplib delivers it),
        where each line may repeat the enhanced code (``"4.7.28 ...\\n4.7.28 ..."``) or even the
        basic code (``"554-IP address is block listed.\\n554 For explanation ..."``). The repeats
        are dropped and the lines joined with single spaces so that the text stays readable and
        a pattern can match across the line breaks. When ``code`` is None and the message itself
        starts with a reply code, that code is taken.
        """
        enhanced: str | None = None
        lines: list[str] = []
        for raw in message.replace("\r", "").split("\n"):
            text = raw.strip()
            m = _CODE.match(text)
            if m and (code is None or int(m.group(1)) == code):
                if code is None:
                    code = int(m.group(1))
                text = text[m.end() :].strip()
            m = _ENHANCED.match(text)
            if m:
                enhanced = enhanced or m.group(1)
                if m.group(1) == enhanced:
                    text = text[m.end() :]
            if text:
                lines.append(" ".join(text.split()))
        joined = " ".join(lines)
        if code is not None and message.lstrip().startswith(f"{code}-"):
            # a multi-line reply that reached us folded into one line (a DSN's Diagnostic-Code:
            # "550-5.7.1 The user ... 550-5.7.1 headers. 550 5.7.1 ...") keeps its line prefixes
            # inside the text: drop them, as the line breaks above are dropped
            joined = " ".join(_folded_prefixes(code, enhanced).sub(" ", joined).split())
        return cls(code=code, enhanced_code=enhanced, text=joined, internal=internal)


def _folded_prefixes(code: int, enhanced: str | None) -> re.Pattern[str]:
    """A folded line's prefix: ``<code>-`` (with the enhanced code if the reply has one), and
    the last line's ``<code> <enhanced>``."""
    if enhanced is None:
        return re.compile(rf"(?<!\S){code}-")
    e = re.escape(enhanced)
    return re.compile(rf"(?<!\S){code}-(?:{e}(?!\S))?|(?<!\S){code} {e}(?!\S)")
