"""The settings on the command line: one flag per field of the settings models (memorize/settings.py), a
`--config` YAML file whose values become the flags' defaults (flags given on the command line override the
file), and the settings a run used, in the file's layout (OUT/config.yaml).

`parse_args` is the layering, the one call the command line makes to read its arguments; `add_settings`,
`settings_from` and `option` map the settings' fields to flags and back."""
from __future__ import annotations

import argparse
import weakref
from pathlib import Path
from types import UnionType
from typing import Union, get_args, get_origin

from pydantic.fields import FieldInfo

from memorize.settings import EvalSettings, GenerationSettings, TrainSettings

# Sections of a --config file: the settings model of each, and its title in --help.
SECTIONS = {"generation": (GenerationSettings, "question generation"), "training": (TrainSettings, "fine-tuning"),
            "evaluation": (EvalSettings, "evaluation")}

# The sections whose flags add_settings gave each parser.
_SECTIONS_OF: weakref.WeakKeyDictionary[argparse.ArgumentParser, list[str]] = weakref.WeakKeyDictionary()


class ConfigError(ValueError):
    pass


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return parser._actions  # argparse lists a parser's arguments nowhere public: its help and usage read this


def _dest(field: FieldInfo, name: str) -> str:
    return (field.json_schema_extra or {}).get("flag", name)


def option(field: FieldInfo, name: str) -> str:
    """The flag of a settings field: `--` and its name with dashes, unless the field names another `flag`."""
    return "--" + _dest(field, name).replace("_", "-")


def add_settings(p: argparse.ArgumentParser, *sections: str) -> None:
    """One flag per field of each section's settings model, a group per section (type, default and help come
    from the field), and --config for a file of them."""
    for section in sections:
        model, title = SECTIONS[section]
        g = p.add_argument_group(title)
        for name, field in model.model_fields.items():
            dest = _dest(field, name)
            flag = option(field, name)
            if any(flag in a.option_strings for a in _arguments(p)):  # --public in `run`: the dataset's, the adapter's
                continue
            kind = field.annotation
            if get_origin(kind) in (Union, UnionType):  # X | None: the flag takes an X
                kind = next(t for t in get_args(kind) if t is not type(None))
            kw = {"dest": dest, "default": field.default, "help": field.description.replace("%", "%%")}
            if kind is bool:
                kw["action"] = argparse.BooleanOptionalAction  # argparse shows the default itself
            elif get_origin(kind) is list:
                kw.update(nargs="+", metavar=(field.json_schema_extra or {}).get("metavar"),
                          help=kw["help"] + " (default: %(default)s)")
            else:
                kw["type"] = kind
                if field.default is not None:
                    kw["help"] += " (default: %(default).4g)" if kind is float else " (default: %(default)s)"
            g.add_argument(flag, **kw)
        _SECTIONS_OF.setdefault(p, []).append(section)
    p.add_argument("--config", metavar="FILE", help="YAML settings: sections generation, training, evaluation (the "
                   "settings' field names, e.g. learning_rate) and top-level options such as out; flags given here "
                   "override the file")


def settings_from(args: argparse.Namespace, section: str):
    """The section's settings model from parsed arguments (validated: ranges, styles, augmentation kinds)."""
    model = SECTIONS[section][0]
    return model(**{name: getattr(args, _dest(f, name)) for name, f in model.model_fields.items()})


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each command, by name."""
    return next(a.choices for a in _arguments(parser) if isinstance(a.choices, dict))  # the subparsers' action


def _groups(parser: argparse.ArgumentParser) -> dict[str, dict[str, argparse.Action]]:
    """{section: {field name: its action}} for the sections the command has, and {"": {dest: action}}
    for the options outside them (documents, out, ...)."""
    by_dest = {a.dest: a for a in _arguments(parser)}
    present = _SECTIONS_OF.get(parser, [])
    out = {section: {name: by_dest[_dest(f, name)] for name, f in model.model_fields.items()}
           for section, (model, title) in SECTIONS.items() if section in present}
    inside = {id(a) for actions in out.values() for a in actions.values()}
    out[""] = {a.dest: a for a in _arguments(parser)
               if id(a) not in inside and a.dest not in ("help", "config", "func", "command")}
    return out


def top_level_options(command: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A command's options outside the settings sections (documents, out, ...), by their key in a --config file."""
    return _groups(command)[""]


def _coerce(action: argparse.Action, value, where: str):
    """A YAML value checked as the flag would check it: its type, a list where the flag takes several, and
    null only where the flag may be left out with nothing (its default is none)."""
    if value is None:
        if action.required or action.default is not None:
            raise ConfigError(f"{where}: null is not allowed here; give a value or leave the key out")
        return None
    many = action.nargs in ("+", "*")
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not many:
        raise ConfigError(f"{where}: expected one value, got a list")
    if action.nargs == 0:  # a switch: store_true, --x/--no-x
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    # int(2.9) is 2 and float(True) is 1.0: a YAML number of the wrong kind is an error, not a silent change.
    if action.type in (int, float) and any(isinstance(v, bool) or (action.type is int and isinstance(v, float))
                                           for v in values):
        raise ConfigError(f"{where}: {value!r} is not a valid {action.type.__name__}")
    try:
        converted = [v if action.type is None else action.type(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {value!r} is not a valid {getattr(action.type, '__name__', 'value')}") from exc
    if action.choices is not None and any(v not in action.choices for v in converted):
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return converted if many else converted[0]


def _apply_config(parser: argparse.ArgumentParser, path: str, command: str, other_commands=()) -> None:
    """Make the file's settings the parser's defaults, so flags given on the command line override them.
    Sections the command has no use for are ignored, and so are top-level settings that only
    `other_commands` (parsers) take: one file serves dataset, train, eval and run."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}")
    groups = _groups(parser)
    everywhere = {a.dest for other in other_commands for a in _arguments(other)}
    for section, settings in data.items():
        if section not in SECTIONS:
            settings, section = {section: settings}, ""  # a top-level option such as out or context
        elif section not in groups:
            continue
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping of setting: value")
        actions = groups[section]
        for key, value in settings.items():
            where = f"{path}: {section + '.' if section else ''}{key}"
            action = actions.get(key.replace("-", "_"))
            if action is None:
                if section or key.replace("-", "_") not in everywhere:
                    raise ConfigError(f"{where}: unknown setting for `memorize {command}` "
                                      f"(known: {', '.join(sorted(actions))})")
                continue
            action.default = _coerce(action, value, where)
            action.required = False
            if action.nargs == "+":  # documents given in the file need not be repeated on the command line
                action.nargs = "*"


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The command line parsed over the settings of its `--config FILE`: the file's values are the defaults,
    the flags given override them; one file serves every command with settings. The file is read before
    parsing, since it may hold required settings (documents, --context). Raises ConfigError for a file that
    cannot be used."""
    by_name = commands(parser)
    configurable = {name: p for name, p in by_name.items() if p in _SECTIONS_OF}
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    config = pre.parse_known_args(argv)[0].config
    command = next((a for a in argv if a in by_name), None)
    if config and command in configurable:
        _apply_config(configurable[command], config, command, list(configurable.values()))
    return parser.parse_args(argv)


def effective_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The settings a run used, in the --config layout (written as config.yaml beside its outputs): the values
    decided at run time (the temperature count, the learning rate) as decided, any credentials in an endpoint
    URL masked. Each section's settings are validated first (pydantic's ValidationError)."""
    from memorize.llm import redact

    out: dict = {}
    for section, actions in _groups(commands(parser)[args.command]).items():
        resolved = settings_from(args, section).resolved() if section else None
        values = {}
        for name, a in actions.items():
            if not hasattr(args, a.dest):
                continue
            value = getattr(args, a.dest)
            if value is None and resolved is not None:  # decided at run time: record the decision
                value = getattr(resolved, name)
            values[name] = redact(value) if name.endswith("base_url") and value else value
        if section:
            out[section] = values
        else:
            out.update(values)
    return out
