"""The Stripe provider: :class:`StripeProvider` charges Stripe payment methods."""

from providers.stripe.adapter import StripeProvider

__all__ = ["StripeProvider"]
