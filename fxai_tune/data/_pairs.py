"""Currency pairs: ``EURUSD`` is 1 EUR (the base) priced in USD (the quote)."""

from __future__ import annotations

import re

__all__ = ["check_currency", "split_pair"]

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_SEPARATORS = re.compile(r"[/_\-. ]")


def check_currency(owner: str, name: str, value: object) -> str:
    """Return ``value`` after checking it is an ISO 4217-style code of 3 capital letters."""
    if not isinstance(value, str) or _CURRENCY.match(value) is None:
        raise ValueError(f"{owner}.{name} must be a currency code of 3 capital letters "
                         f"(e.g. 'USD', 'EUR', 'JPY'), got {name}={value!r}")
    return value


def split_pair(symbol: object, *, owner: str = "DataConfig", name: str = "symbol"
               ) -> tuple[str, str]:
    """``(base, quote)`` of a pair symbol: ``"EURUSD"``, ``"EUR/USD"`` or ``"eur_usd"``.

    Raises:
        ValueError: When the symbol is not two 3-letter currency codes.

    Example:
        >>> split_pair("USD/JPY")
        ('USD', 'JPY')
    """
    letters = _SEPARATORS.sub("", symbol).upper() if isinstance(symbol, str) else ""
    if len(letters) != 6 or not letters.isalpha() or letters[:3] == letters[3:]:
        raise ValueError(f"{owner}.{name} must be a currency pair of two different 3-letter "
                         f"codes, base then quote (e.g. 'EURUSD', 'USD/JPY'), got "
                         f"{name}={symbol!r}")
    return letters[:3], letters[3:]
