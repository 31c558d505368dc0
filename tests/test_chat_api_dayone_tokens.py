"""DayOne-issued RS256 tokens: accepted on REST and sockets when the public key is configured."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from dayone_chat.routing import websocket_application as app
from tests.e2e.helpers import Socket, adb, refused_with

pytestmark = pytest.mark.django_db(transaction=True)


def _keypair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


PRIVATE, PUBLIC = _keypair()
OTHER_PRIVATE, _ = _keypair()


@pytest.fixture
def dayone(settings):
    settings.DAYONE_JWT_PUBLIC_KEY = PUBLIC
    settings.DAYONE_JWT_ISSUER = "https://id.dayone.example"
    settings.DAYONE_JWT_AUDIENCE = "dayone-chat"
    return settings


def dayone_token(sub: str = "42", *, key: bytes = PRIVATE, **claims: object) -> str:
    payload = {
        "sub": sub,
        "iss": "https://id.dayone.example",
        "aud": "dayone-chat",
        "exp": int(time.time()) + 300,
        "given_name": "Dana",
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256")


def get_sessions(token: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/sessions")


def test_dayone_token_is_accepted_and_its_user_provisioned_when_the_key_is_configured(dayone):
    answer = get_sessions(dayone_token("42"))
    assert answer.status_code == 200
    user = User.objects.get(username="dayone:42")
    assert user.first_name == "Dana"
    assert not user.is_staff
    assert not user.has_usable_password()
    assert get_sessions(dayone_token("42")).status_code == 200
    assert User.objects.filter(username__startswith="dayone:").count() == 1


@pytest.mark.parametrize(
    ("token_kwargs", "why"),
    [
        ({"key": OTHER_PRIVATE}, "signed with another key"),
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"aud": "another-app"}, "another audience"),
    ],
)
def test_dayone_token_is_refused_with_401_when_it_is_not_valid(dayone, token_kwargs, why):
    answer = get_sessions(dayone_token("42", **token_kwargs))
    assert answer.status_code == 401, why
    assert answer.json()["code"] == "token_not_valid"
    assert not User.objects.filter(username="dayone:42").exists()


def test_dayone_token_is_refused_when_no_public_key_is_configured(settings):
    settings.DAYONE_JWT_PUBLIC_KEY = ""
    assert get_sessions(dayone_token("42")).status_code == 401


def test_dayone_subject_cannot_become_a_local_account_when_the_names_match(dayone):
    local = User.objects.create_user(username="agent1", password="x", is_staff=True)
    assert get_sessions(dayone_token("agent1")).status_code == 200
    assert User.objects.get(username="dayone:agent1").pk != local.pk


@pytest.mark.asyncio
async def test_dayone_token_opens_a_socket_when_sent_in_the_header(dayone):
    from tests.factories import SessionFactory

    def make():
        user = User.objects.create(username="dayone:7")
        return SessionFactory(customer=user)

    session = await adb(make)()
    header = [(b"authorization", f"Bearer {dayone_token('7')}".encode())]
    socket = await Socket.open(app, f"/ws/sessions/{session.id}/", headers=header)
    assert (await socket.recv())["session"]["id"] == str(session.id)
    await socket.close()
    bad = [(b"authorization", f"Bearer {dayone_token('7', key=OTHER_PRIVATE)}".encode())]
    assert await refused_with(app, f"/ws/sessions/{session.id}/", headers=bad) == 4401
