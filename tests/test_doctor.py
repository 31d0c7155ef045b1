"""Tests for the doctor's base image check, with a fake engine."""

from __future__ import annotations

from typing import Any

import docker.errors
import requests

from harness.doctor import check_base_image


class FakeImages:
    def get(self, tag: str) -> Any:
        raise docker.errors.ImageNotFound(f"no such image: {tag}")


class FakeApi:
    def __init__(self, reachable: bool) -> None:
        self.reachable = reachable

    def inspect_distribution(self, image: str) -> dict[str, Any]:
        if self.reachable:
            return {"Descriptor": {"digest": "sha256:" + "0" * 64}}
        response = requests.Response()
        response.status_code = 500
        raise docker.errors.APIError(
            "500 Server Error", response=response, explanation="no such host"
        )


class FakeClient:
    def __init__(self, reachable: bool) -> None:
        self.images = FakeImages()
        self.api = FakeApi(reachable)


def test_image_without_stand_in_or_registry_fails() -> None:
    check = check_base_image(FakeClient(reachable=False), "python:3.12-slim")
    assert check.status == "fail"
    assert check.detail.startswith(
        "python:3.12-slim is not on the engine, has no stand-in, and the "
        "registry cannot provide it: no such host"
    )


def test_image_in_reachable_registry_warns() -> None:
    check = check_base_image(FakeClient(reachable=True), "python:3.12-slim")
    assert check.status == "warn"
    assert "`coldstart run` will pull it" in check.detail
