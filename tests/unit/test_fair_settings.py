"""MLQ_TENANT_WEIGHTS and MLQ_MAX_RUNNING_PER_TENANT: parsed at start, and a bad value names its setting."""

from __future__ import annotations

import pytest

from store.fair import tenant_label
from store.settings import Settings, SettingsError


def test_weights_name_tenants_of_the_auth_tokens() -> None:
    env = {"MLQ_AUTH_TOKENS": "acme:t1,beta:t2", "MLQ_TENANT_WEIGHTS": "acme=3, beta=0.5"}
    assert Settings.from_env(env).tenant_weights == {"acme": 3.0, "beta": 0.5}


def test_without_auth_the_only_tenant_is_default() -> None:
    assert Settings.from_env({"MLQ_TENANT_WEIGHTS": "default=2"}).tenant_weights == {"default": 2.0}


@pytest.mark.parametrize(
    "raw", ["ghost=2", "acme", "acme=0", "acme=-1", "acme=lots", "=2", "acme=inf"], ids=lambda r: r or "empty"
)
def test_a_weight_for_an_unknown_tenant_or_not_above_zero_is_a_start_error(raw: str) -> None:
    with pytest.raises(SettingsError, match="MLQ_TENANT_WEIGHTS"):
        Settings.from_env({"MLQ_AUTH_TOKENS": "acme:t1", "MLQ_TENANT_WEIGHTS": raw})


@pytest.mark.parametrize("raw", ["0", "-1", "two"])
def test_a_running_cap_below_one_is_a_start_error(raw: str) -> None:
    with pytest.raises(SettingsError, match="MLQ_MAX_RUNNING_PER_TENANT"):
        Settings.from_env({"MLQ_MAX_RUNNING_PER_TENANT": raw})


def test_no_cap_unless_set() -> None:
    assert Settings.from_env({}).max_running_per_tenant == 0
    assert Settings.from_env({"MLQ_MAX_RUNNING_PER_TENANT": "2"}).max_running_per_tenant == 2


def test_the_metrics_pseudonym_of_a_tenant_is_stable_and_keyed() -> None:
    assert tenant_label("acme", "k") == tenant_label("acme", "k") != tenant_label("acme", "other")
    assert "acme" not in tenant_label("acme", "k")
