"""The API never shows a notifier's secrets: PagerDuty routing keys, Slack webhook paths,
passwords and query values in webhook URLs."""

from __future__ import annotations

from moorage.metrics.alert_rules import Notifier
from moorage.ops.alerts import masked, masked_url


def test_slack_webhook_paths_are_cut_to_their_last_four_characters() -> None:
    url = "https://hooks.slack.com/services/T0001/B0002/abcdefghijklmnopqrstuvwx"
    shown = masked_url(url, "slack")
    assert shown == "https://hooks.slack.com/services/****uvwx"
    assert "T0001" not in shown and "abcdefgh" not in shown


def test_webhook_passwords_and_query_values_are_hidden_the_rest_kept() -> None:
    url = "https://alert:hunter2@receiver.example:9093/api/v2/hook?token=s3cret&debug"
    shown = masked_url(url, "webhook")
    assert shown == "https://alert:****@receiver.example:9093/api/v2/hook?token=****&debug"
    plain = "http://127.0.0.1:9093/hook"
    assert masked_url(plain, "webhook") == plain


def test_a_pagerduty_notifier_hides_its_routing_key() -> None:
    notifier = Notifier(
        name="pd",
        kind="pagerduty",
        url="https://events.pagerduty.com/v2/enqueue",
        routing_key="R0123456789abcdef",
    )
    shown = masked(notifier)
    assert shown.routing_key == "****cdef"
    assert shown.url == notifier.url
    assert masked(notifier.model_copy(update={"routing_key": "short"})).routing_key == "****"
