"""The privacy guard: secrets and personal data become typed placeholders (``EMAIL_1``) before a text
goes to a hosted model, and come back in its answer. `detectors` finds them (credentials through
`secrets`, phone numbers through `phones`); `redactor` replaces them and applies a task's privacy
policy. What is found, how, and how well: docs/redaction.md."""

from workhorse.privacy.redactor import PrivacyPolicy, Redaction, Redactor, redact, restore
from workhorse.privacy.secrets import prepare

__all__ = ["PrivacyPolicy", "Redaction", "Redactor", "prepare", "redact", "restore"]
