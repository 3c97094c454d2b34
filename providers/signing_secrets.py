"""What a provider's notification signing secret must look like before paygate trusts it.

Why a rule of its own: the secret is the whole of a public endpoint's authentication. A
secret anyone can guess lets anyone sign a notification, and a notification moves money
state (it records a charge's outcome). Stripe's webhook signatures are HMAC-SHA256 under the
endpoint's secret as given (``stripe.WebhookSignature``): the SDK refuses only an empty or
blank one, so ``whsec_`` alone -- what a template makes of ``whsec_${SECRET}`` when the
variable is unset -- is a key everyone knows, and every event signed with it is genuine to
the SDK. Pure (no SDK import), so the settings can check it when they are read, and the
reader again when it is built.
"""

from __future__ import annotations

from typing import Final

STRIPE_SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
# Stripe's endpoint secrets carry 32 random characters after the prefix (the Stripe CLI's,
# 64 hex digits). Sixteen is far below either and far above anything typed by hand or
# left over from a truncated paste.
STRIPE_SECRET_MIN_RANDOM: Final = 16


def stripe_signing_secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot be a Stripe webhook endpoint's signing secret, or None.

    Never quotes the secret: the answer may end up in a log or an exit message."""
    if not secret.startswith(STRIPE_SECRET_PREFIX):
        return f"a Stripe webhook signing secret starts with {STRIPE_SECRET_PREFIX}"
    if any(char.isspace() for char in secret):
        # A stray newline or space is signed with, so no genuine event would verify.
        return "a Stripe webhook signing secret holds no spaces or line breaks"
    if len(secret) - len(STRIPE_SECRET_PREFIX) < STRIPE_SECRET_MIN_RANDOM:
        return (
            f"a Stripe webhook signing secret has at least {STRIPE_SECRET_MIN_RANDOM} "
            f"characters after {STRIPE_SECRET_PREFIX}: a shorter one can be guessed, and "
            "anyone who guesses it can sign events"
        )
    return None
