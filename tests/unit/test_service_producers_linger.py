"""The facade's and the consumer's producers take ``PAYGATE_KAFKA_LINGER_MS``.

Both are on the way of every create-and-wait (the command, the result event): a producer
built without the setting would keep aiokafka's or the wrapper's default whatever is
configured. Found here by reading the two processes' wiring.
"""

import ast
from pathlib import Path

import pytest

from paygate.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["paygate/consumer_service.py", "paygate/facade_service.py"]


def _producer_calls(source: str) -> list[ast.Call]:
    tree = ast.parse((ROOT / source).read_text(), source)
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "KafkaProducer"
    ]


@pytest.mark.parametrize("source", SERVICES)
def test_the_service_producer_takes_the_linger_setting(source: str) -> None:
    [call] = _producer_calls(source)
    [linger] = [keyword.value for keyword in call.keywords if keyword.arg == "linger_ms"]
    assert ast.unparse(linger) == "settings.kafka_linger_ms"


def test_the_setting_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().kafka_linger_ms == 0
    monkeypatch.setenv("PAYGATE_KAFKA_LINGER_MS", "5")
    assert Settings().kafka_linger_ms == 5
    monkeypatch.setenv("PAYGATE_KAFKA_LINGER_MS", "-1")
    with pytest.raises(ValueError, match="kafka_linger_ms"):
        Settings()
