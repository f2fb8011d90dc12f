"""Where settings come from, and how they are documented: a settings struct (a
kw-only msgspec Struct whose every field has a default and an ``Annotated``
description) read from defaults, prefixed environment variables and CLI flags, and
described as ``--flags`` and as the README's Markdown table.

Generic over the struct, so server.config only declares the settings and this module
never imports it (server.config binds ``load_settings``, ``add_arguments`` and
``settings_table`` from a ``SettingsSource`` of its ``Settings``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args, get_origin, get_type_hints

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


class SettingsSource(Generic[S]):
    def __init__(self, settings_type: type[S], env_prefix: str) -> None:
        self.settings_type = settings_type
        self.env_prefix = env_prefix

    def fields(self) -> list[tuple[str, Any, Any, str]]:
        """(name, type, default, description) for every setting."""
        hints = get_type_hints(self.settings_type, include_extras=True)
        defaults = self.settings_type()
        out = []
        for name in self._ordered():
            hint = hints[name]
            desc = ""
            base = hint
            if get_origin(hint) is Annotated:
                base, *metas = get_args(hint)
                for m in metas:
                    if isinstance(m, msgspec.Meta) and m.description:
                        desc = m.description
            out.append((name, base, getattr(defaults, name), desc))
        return out

    def _ordered(self) -> list[str]:
        """The type's own settings first, then those of its bases (a part such as the
        F5 settings, kept in a module of its own), in declaration order."""
        own = [
            n
            for n in self.settings_type.__struct_fields__
            if n in vars(self.settings_type).get("__annotations__", {})
        ]
        return own + [n for n in self.settings_type.__struct_fields__ if n not in own]

    def load(
        self, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> S:
        """Defaults, then ``<prefix>NAME`` variables from ``env`` (the process's when
        None), then explicit overrides (CLI flags; None values are left out).

        Raises msgspec.ValidationError naming the bad setting.
        """
        env = os.environ if env is None else env
        raw: dict[str, Any] = {}
        for name in self.settings_type.__struct_fields__:
            key = self.env_prefix + name.upper()
            if key in env:
                raw[name] = env[key]
        # Values from the environment are strings: convert them leniently ("4.5", "true").
        merged = msgspec.to_builtins(self.settings_type())
        merged.update(msgspec.convert(raw, dict[str, Any]))
        settings = msgspec.convert(merged, self.settings_type, strict=False)
        if overrides:
            merged = msgspec.to_builtins(settings)
            merged.update({k: v for k, v in overrides.items() if v is not None})
            settings = msgspec.convert(merged, self.settings_type, strict=False)
        return settings

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One ``--flag`` per setting; absent flags leave the env/default value alone."""
        for name, typ, default, desc in self.fields():
            flag = "--" + name.replace("_", "-")
            # argparse formats help with %: a literal % ("packet loss, %") must be doubled
            text = f"{desc} (default {default})".replace("%", "%%")
            if typ is bool:
                parser.add_argument(
                    flag,
                    dest=name,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=text,
                )
            else:
                choices: Sequence[Any] | None = (
                    get_args(typ) if get_origin(typ) is Literal else None
                )
                parser.add_argument(
                    flag,
                    dest=name,
                    default=None,
                    choices=choices,
                    help=text,
                )

    def table(self) -> str:
        """The Markdown table of every setting: flag, variable, default, meaning."""
        lines = [
            "| flag | environment | default | meaning |",
            "|---|---|---|---|",
        ]
        for name, _typ, default, desc in self.fields():
            shown = str(default).lower() if isinstance(default, bool) else default
            lines.append(
                f"| `--{name.replace('_', '-')}` | `{self.env_prefix}{name.upper()}` "
                f"| `{shown}` | {desc} |"
            )
        return "\n".join(lines) + "\n"
