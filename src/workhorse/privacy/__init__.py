"""The privacy guard: secrets and personal data become typed placeholders (``EMAIL_1``) before a text
goes to a hosted model, and come back in its answer. `detectors` finds them; `redactor` replaces them
and applies a task's privacy policy."""

from workhorse.privacy.redactor import PrivacyPolicy, Redaction, Redactor, redact, restore

__all__ = ["PrivacyPolicy", "Redaction", "Redactor", "redact", "restore"]
