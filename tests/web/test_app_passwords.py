"""App passwords over HTTP as credentials that can be revoked: only the account password lists, creates or
revokes them (an app password, in Basic or as Bearer, gets a 403 problem), and a revoked one is refused
from the very next request."""

from __future__ import annotations

import base64

import pytest

URL = "/jmap/app-passwords"
PASSWORD = "correct horse"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def alice(services):
    user, _ = services.accounts.create_user("alice@example.org", PASSWORD)
    return user


def create(client, label: str) -> dict:
    response = client.post(URL, json={"label": label}, headers=basic("alice@example.org", PASSWORD))
    assert response.status_code == 201
    return response.get_json()


def as_app_password(token: str) -> list[dict[str, str]]:
    """Both ways an app password authenticates a request."""
    return [{"Authorization": f"Bearer {token}"}, basic("alice@example.org", token)]


def test_an_app_password_can_neither_list_nor_revoke_its_siblings(client, alice):
    phone, laptop = create(client, "phone"), create(client, "laptop")
    for headers in as_app_password(phone["token"]):
        listed = client.get(URL, headers=headers)
        assert listed.status_code == 403 and listed.content_type == "application/problem+json"
        assert "account password" in listed.get_json()["detail"]
        for target in (laptop["id"], phone["id"]):
            revoked = client.delete(f"{URL}/{target}", headers=headers)
            assert revoked.status_code == 403 and revoked.content_type == "application/problem+json"
    for token in (phone["token"], laptop["token"]):  # nothing was revoked
        assert client.get("/jmap/session", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    own = client.get(URL, headers=basic("alice@example.org", PASSWORD))
    assert [p["label"] for p in own.get_json()["appPasswords"]] == ["phone", "laptop"]


def test_a_revoked_app_password_is_refused_from_the_next_request(client, alice):
    phone = create(client, "phone")
    for headers in as_app_password(phone["token"]):
        assert client.get("/jmap/session", headers=headers).status_code == 200  # checked (and any cache warm)
    assert client.delete(f"{URL}/{phone['id']}", headers=basic("alice@example.org", PASSWORD)).status_code == 204
    for headers in as_app_password(phone["token"]):
        response = client.get("/jmap/session", headers=headers)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Basic")


CURRENT = f"{URL}/current"


def test_an_app_password_revokes_itself_and_no_sibling(client, alice):
    phone, laptop = create(client, "phone"), create(client, "laptop")
    first, second = as_app_password(phone["token"])
    assert client.delete(CURRENT, headers=first).status_code == 204
    for headers in (first, second):  # the revoked token is refused at once, either way it is sent
        assert client.get("/jmap/session", headers=headers).status_code == 401
        assert client.delete(CURRENT, headers=headers).status_code == 401
    assert client.get("/jmap/session", headers={"Authorization": f"Bearer {laptop['token']}"}).status_code == 200
    listed = client.get(URL, headers=basic("alice@example.org", PASSWORD)).get_json()["appPasswords"]
    assert [p["label"] for p in listed] == ["laptop"]


def test_another_users_app_password_cannot_log_out_anyone_but_itself(client, services, alice):
    mallory, _ = services.accounts.create_user("mallory@example.org", PASSWORD)
    phone = create(client, "phone")
    made = client.post(URL, json={"label": "x"}, headers=basic("mallory@example.org", PASSWORD)).get_json()
    for target in (phone["id"], "current"):  # naming alice's id, or asking for "current"
        client.delete(f"{URL}/{target}", headers={"Authorization": f"Bearer {made['token']}"})
    assert client.get("/jmap/session", headers={"Authorization": f"Bearer {phone['token']}"}).status_code == 200
    assert client.get("/jmap/session", headers={"Authorization": f"Bearer {made['token']}"}).status_code == 401


def test_the_account_password_has_no_current_app_password_to_revoke(client, alice):
    phone = create(client, "phone")
    response = client.delete(CURRENT, headers=basic("alice@example.org", PASSWORD))
    assert response.status_code == 400 and response.content_type == "application/problem+json"
    assert "not made with an app password" in response.get_json()["detail"]
    assert client.get("/jmap/session", headers={"Authorization": f"Bearer {phone['token']}"}).status_code == 200
    assert client.delete(CURRENT).status_code == 401
