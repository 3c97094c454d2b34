"""Settings that do not even parse, said the way an operator sets them.

pydantic's own report names the field (``kafka_sasl_mechanism``) under a stack trace; the
operator set an environment variable (``PAYGATE_KAFKA_SASL_MECHANISM``). A process whose
settings do not parse exits 1 with one line per problem, each naming the variable, and
never echoes a secret's value.
"""

from __future__ import annotations

from pydantic import AliasChoices, SecretStr, ValidationError

from paygate.settings import Settings


class SettingsRefused(SystemExit):
    """Exit 1 with the message only: Python prints a SystemExit's text, no traceback."""


def env_name(field: str) -> str:
    """The environment variable that sets ``field`` (its first alias, if it has one)."""
    spec = Settings.model_fields.get(field)
    alias = None if spec is None else spec.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"PAYGATE_{field.upper()}"


def _is_secret(field: str) -> bool:
    spec = Settings.model_fields.get(field)
    default = None if spec is None else spec.default
    annotation = "" if spec is None else str(spec.annotation)
    return isinstance(default, SecretStr) or "SecretStr" in annotation


def describe(program: str, error: ValidationError) -> str:
    lines = [f"{program} cannot start: these settings are not valid:"]
    for problem in error.errors():
        location = problem.get("loc") or ("settings",)
        field = str(location[0])
        name = env_name(field) if field in Settings.model_fields else field
        value = problem.get("input")
        shown = "" if _is_secret(field) or isinstance(value, dict) else f"={value}"
        lines.append(f"  - {name}{shown}: {problem['msg']}")
    return "\n".join(lines)


def load_settings(program: str) -> Settings:
    """The process's settings, or :class:`SettingsRefused` naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsRefused(describe(program, exc)) from None
