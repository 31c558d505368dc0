"""DayOne customer data for the agent console: the providers, the access rule and its log.

Two providers answer the same three questions (profile, recent orders with their items,
transactions) in the same shapes:

- :class:`BuiltinProvider` reads the local tables ``CustomerProfile``/``Order``/``OrderItem``/
  ``Transaction`` that ``seed_demo`` fills (development, demos, tests);
- :class:`HttpProvider` asks DayOne's customer services over HTTP (``DAYONE_API_BASE_URL``,
  ``DAYONE_API_TOKEN``, ``DAYONE_API_TIMEOUT_S``).

``DAYONE_DATA_PROVIDER`` (``builtin`` or ``http``) chooses one. Any failure to reach DayOne, a 5xx,
a timeout or an answer that is not what we expect raises :class:`CustomerDataUnavailable` (HTTP
503 for the console), which the data panel shows as an outage; the chat never depends on it.

:func:`customer_data_read` is the only way in: it decides whether the calling user may see the
customer's data (an agent to whom one of that customer's sessions is OFFERED or with whom it is
ACTIVE), writes one ``CustomerDataAccess`` row for every attempt by an agent, allowed or refused,
and only then asks the provider.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal, Protocol, TypedDict, cast
from urllib.parse import quote
from uuid import UUID

import httpx
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.utils import timezone

from agents.models import Agent, CustomerDataAccess, CustomerProfile, Order, Transaction
from chat.errors import DomainError
from chat.models import SEATED_STATUSES, ChatSession

logger = logging.getLogger(__name__)

What = Literal["profile", "orders", "transactions"]
WHATS: tuple[What, ...] = ("profile", "orders", "transactions")

DEFAULT_ORDERS_LIMIT = 10
DEFAULT_TRANSACTIONS_LIMIT = 20
MAX_LIMIT = 50

# --- The shapes every provider returns (and the REST answers carry) ---------------------------


class ProfileData(TypedDict):
    customer_ref: str
    full_name: str
    email: str
    phone: str
    tier: str
    customer_since: str | None  # ISO date
    city: str
    country: str


class OrderItemData(TypedDict):
    sku: str
    name: str
    quantity: int
    unit_price_cents: int


class OrderData(TypedDict):
    number: str
    status: str
    placed_at: str | None  # ISO 8601 UTC
    total_cents: int
    currency: str
    items: list[OrderItemData]


class TransactionData(TypedDict):
    reference: str
    kind: str
    amount_cents: int
    currency: str
    created_at: str | None
    order_number: str | None
    method: str


CustomerData = ProfileData | list[OrderData] | list[TransactionData]


# --- Errors -----------------------------------------------------------------------------------


class CustomerDataUnavailable(DomainError):
    """DayOne's customer services could not answer (down, slow, 5xx, or nonsense)."""

    def __init__(self, detail: str) -> None:
        super().__init__("customer_data_unavailable", detail, http_status=503)


class CustomerDataNotFound(DomainError):
    def __init__(self, detail: str = "DayOne has no record of this customer.") -> None:
        super().__init__("customer_data_not_found", detail, http_status=404)


class CustomerDataForbidden(DomainError):
    def __init__(self, detail: str) -> None:
        super().__init__("customer_data_forbidden", detail, http_status=403)


# --- Providers --------------------------------------------------------------------------------


class CustomerDataProvider(Protocol):
    name: str

    def profile(self, *, customer: AbstractBaseUser) -> ProfileData: ...

    def orders(self, *, customer: AbstractBaseUser, limit: int) -> list[OrderData]: ...

    def transactions(self, *, customer: AbstractBaseUser, limit: int) -> list[TransactionData]: ...


def customer_ref(customer: AbstractBaseUser) -> str:
    """How DayOne knows the customer: the username is the subject of DayOne's identity tokens."""
    return customer.get_username()


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as on the rest of the wire."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _iso_date(value: date | None) -> str | None:
    return value.isoformat() if value else None


class BuiltinProvider:
    """The local demo tables (``agents.demo_data`` fills them via ``seed_demo``)."""

    name = "builtin"

    def profile(self, *, customer: AbstractBaseUser) -> ProfileData:
        row = CustomerProfile.objects.filter(user_id=customer.pk).first()
        if row is None:
            raise CustomerDataNotFound()
        return {
            "customer_ref": customer_ref(customer),
            "full_name": row.full_name,
            "email": row.email,
            "phone": row.phone,
            "tier": row.tier,
            "customer_since": _iso_date(row.customer_since),
            "city": row.city,
            "country": row.country,
        }

    def orders(self, *, customer: AbstractBaseUser, limit: int) -> list[OrderData]:
        orders = Order.objects.filter(customer_id=customer.pk).prefetch_related("items")[:limit]
        return [
            {
                "number": order.number,
                "status": order.status,
                "placed_at": iso(order.placed_at),
                "total_cents": order.total_cents,
                "currency": order.currency,
                "items": [
                    {
                        "sku": item.sku,
                        "name": item.name,
                        "quantity": item.quantity,
                        "unit_price_cents": item.unit_price_cents,
                    }
                    for item in order.items.all()
                ],
            }
            for order in orders
        ]

    def transactions(self, *, customer: AbstractBaseUser, limit: int) -> list[TransactionData]:
        rows = Transaction.objects.filter(customer_id=customer.pk).select_related("order")[:limit]
        return [
            {
                "reference": tx.reference,
                "kind": tx.kind,
                "amount_cents": tx.amount_cents,
                "currency": tx.currency,
                "created_at": iso(tx.created_at),
                "order_number": tx.order.number if tx.order else None,
                "method": tx.method,
            }
            for tx in rows
        ]


class _BadShape(ValueError):
    """DayOne answered 200 with JSON we cannot read; reported as an outage, never a crash."""


def _field_str(obj: dict[str, object], key: str, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise _BadShape(f"missing {key!r}")
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _BadShape(f"{key!r} is not text")
    return str(value)


def _field_opt_str(obj: dict[str, object], key: str) -> str | None:
    value = obj.get(key)
    return None if value is None else _field_str(obj, key)


def _field_int(obj: dict[str, object], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadShape(f"{key!r} is not a whole number")
    return value


def _as_object(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _BadShape(f"{what} is not a JSON object")
    return cast(dict[str, object], value)


def _as_list(value: object, what: str) -> list[object]:
    # DayOne's list endpoints answer {"results": [...]}; a bare list is accepted as well.
    if isinstance(value, dict) and "results" in value:
        value = value["results"]
    if not isinstance(value, list):
        raise _BadShape(f"{what} is not a list")
    return value


@dataclass
class HttpProvider:
    """DayOne's customer services over HTTP.

    ``GET {base}/customers/{ref}/profile``, ``/orders?limit=N`` and ``/transactions?limit=N``
    with ``Authorization: Bearer {token}``; answers in the shapes above (lists may be wrapped in
    ``{"results": [...]}``). ``transport`` lets tests stand in for DayOne.
    """

    base_url: str
    token: str
    timeout_s: float
    transport: httpx.BaseTransport | None = None
    name: str = "http"

    def _get(self, customer: AbstractBaseUser, what: str, params: dict[str, int]) -> object:
        if not self.base_url:
            raise CustomerDataUnavailable(
                "DayOne's customer service is not configured (DAYONE_API_BASE_URL is empty)."
            )
        url = (
            f"{self.base_url.rstrip('/')}/customers/{quote(customer_ref(customer), safe='')}/{what}"
        )
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            # A client per call keeps no sockets open between the rare reads of an agent; the
            # timeout covers connect, each read and the pool wait alike.
            with httpx.Client(
                timeout=httpx.Timeout(self.timeout_s), transport=self.transport
            ) as client:
                response = client.get(url, params=params, headers=headers)
        except httpx.TimeoutException:
            logger.warning("DayOne %s for %s timed out", what, customer_ref(customer))
            raise CustomerDataUnavailable(
                f"DayOne's customer service did not answer within {self.timeout_s:g} s."
            ) from None
        except httpx.HTTPError as exc:
            logger.warning("DayOne %s unreachable: %s", what, exc)
            raise CustomerDataUnavailable(
                "DayOne's customer service cannot be reached right now."
            ) from None
        if response.status_code == 404:
            raise CustomerDataNotFound()
        if response.status_code >= 400:
            logger.warning("DayOne %s answered %s", what, response.status_code)
            raise CustomerDataUnavailable(
                f"DayOne's customer service answered with an error ({response.status_code})."
            )
        try:
            return response.json()
        except ValueError:
            logger.warning("DayOne %s answered something that is not JSON", what)
            raise CustomerDataUnavailable(
                "DayOne's customer service sent an answer we could not read."
            ) from None

    def _unreadable(self, what: str, exc: _BadShape) -> CustomerDataUnavailable:
        logger.warning("DayOne %s answer has an unexpected shape: %s", what, exc)
        return CustomerDataUnavailable(
            "DayOne's customer service sent an answer we could not read."
        )

    def profile(self, *, customer: AbstractBaseUser) -> ProfileData:
        raw = self._get(customer, "profile", {})
        try:
            obj = _as_object(raw, "profile")
            return {
                "customer_ref": _field_str(obj, "customer_ref", required=False)
                or customer_ref(customer),
                "full_name": _field_str(obj, "full_name"),
                "email": _field_str(obj, "email", required=False),
                "phone": _field_str(obj, "phone", required=False),
                "tier": _field_str(obj, "tier", required=False),
                "customer_since": _field_opt_str(obj, "customer_since"),
                "city": _field_str(obj, "city", required=False),
                "country": _field_str(obj, "country", required=False),
            }
        except _BadShape as exc:
            raise self._unreadable("profile", exc) from None

    def orders(self, *, customer: AbstractBaseUser, limit: int) -> list[OrderData]:
        raw = self._get(customer, "orders", {"limit": limit})
        try:
            result: list[OrderData] = []
            for entry in _as_list(raw, "orders")[:limit]:
                obj = _as_object(entry, "an order")
                items: list[OrderItemData] = []
                for item_entry in _as_list(obj.get("items", []), "an order's items"):
                    item = _as_object(item_entry, "an order item")
                    items.append(
                        {
                            "sku": _field_str(item, "sku", required=False),
                            "name": _field_str(item, "name"),
                            "quantity": _field_int(item, "quantity"),
                            "unit_price_cents": _field_int(item, "unit_price_cents"),
                        }
                    )
                result.append(
                    {
                        "number": _field_str(obj, "number"),
                        "status": _field_str(obj, "status"),
                        "placed_at": _field_opt_str(obj, "placed_at"),
                        "total_cents": _field_int(obj, "total_cents"),
                        "currency": _field_str(obj, "currency", required=False) or "USD",
                        "items": items,
                    }
                )
            return result
        except _BadShape as exc:
            raise self._unreadable("orders", exc) from None

    def transactions(self, *, customer: AbstractBaseUser, limit: int) -> list[TransactionData]:
        raw = self._get(customer, "transactions", {"limit": limit})
        try:
            result: list[TransactionData] = []
            for entry in _as_list(raw, "transactions")[:limit]:
                obj = _as_object(entry, "a transaction")
                result.append(
                    {
                        "reference": _field_str(obj, "reference"),
                        "kind": _field_str(obj, "kind"),
                        "amount_cents": _field_int(obj, "amount_cents"),
                        "currency": _field_str(obj, "currency", required=False) or "USD",
                        "created_at": _field_opt_str(obj, "created_at"),
                        "order_number": _field_opt_str(obj, "order_number"),
                        "method": _field_str(obj, "method", required=False),
                    }
                )
            return result
        except _BadShape as exc:
            raise self._unreadable("transactions", exc) from None


def get_provider() -> CustomerDataProvider:
    """The provider the settings choose (read on every call, so tests can switch it)."""
    kind = settings.DAYONE_DATA_PROVIDER
    if kind == "http":
        return HttpProvider(
            base_url=settings.DAYONE_API_BASE_URL,
            token=settings.DAYONE_API_TOKEN,
            timeout_s=float(settings.DAYONE_API_TIMEOUT_S),
        )
    if kind == "builtin":
        return BuiltinProvider()
    raise CustomerDataUnavailable(
        f"DAYONE_DATA_PROVIDER={kind!r} is not a known provider (use builtin or http)."
    )


# --- The access rule and the access log --------------------------------------------------------


def _agent_of(user: AbstractBaseUser | AnonymousUser) -> Agent | None:
    if not user.is_authenticated or not getattr(user, "is_staff", False):
        return None
    return Agent.objects.filter(user_id=user.pk).first()


def customer_data_read(
    *,
    user: AbstractBaseUser | AnonymousUser,
    session_id: UUID,
    what: What,
    limit: int | None = None,
    provider: CustomerDataProvider | None = None,
) -> CustomerData:
    """Return ``what`` of the customer of ``session_id``, if ``user`` may see it now.

    Allowed only to the agent the session is OFFERED to or ACTIVE with. Every attempt by an agent
    is written to ``CustomerDataAccess`` (``ok`` says whether access was granted) before the
    provider is asked, so an outage of DayOne still leaves the read on record. Attempts by
    someone without an agent profile, or for a session that does not exist, have no agent or no
    customer to record; they go to this module's logger and are refused the same way.

    No lock is taken: the rule is checked at the moment of the read, and a session that ends a
    moment later does not make an already-granted read wrong.
    """
    agent = _agent_of(user)
    if agent is None:
        logger.warning(
            "customer data %s of session %s refused: user %s is not an agent",
            what,
            session_id,
            getattr(user, "pk", None),
        )
        raise CustomerDataForbidden("Only agents can read DayOne customer data.")
    session = ChatSession.objects.select_related("customer").filter(id=session_id).first()
    if session is None:
        logger.warning(
            "customer data %s refused: agent %s asked for unknown session %s",
            what,
            agent.pk,
            session_id,
        )
        raise CustomerDataForbidden(
            "You can see a customer's data only while their chat is offered to you or active "
            "with you."
        )
    allowed = session.agent_id == agent.pk and session.status in SEATED_STATUSES
    CustomerDataAccess.objects.create(
        agent=agent,
        customer=session.customer,
        session=session,
        what=what,
        at=timezone.now(),
        ok=allowed,
    )
    if not allowed:
        raise CustomerDataForbidden(
            "You can see a customer's data only while their chat is offered to you or active "
            "with you."
        )
    provider = provider or get_provider()
    customer = session.customer
    if what == "profile":
        return provider.profile(customer=customer)
    if what == "orders":
        return provider.orders(customer=customer, limit=_clamp(limit, DEFAULT_ORDERS_LIMIT))
    return provider.transactions(customer=customer, limit=_clamp(limit, DEFAULT_TRANSACTIONS_LIMIT))


def _clamp(limit: int | None, default: int) -> int:
    if limit is None:
        return default
    return max(1, min(limit, MAX_LIMIT))
